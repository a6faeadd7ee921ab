"""Names for dtypes as safetensors, the database and users spell them."""

from __future__ import annotations

import torch

from tvstore.errors import UsageError

_BY_NAME: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_BY_DTYPE = {v: k for k, v in _BY_NAME.items()}
_ALIASES = {"fp64": "F64", "fp32": "F32", "float32": "F32", "fp16": "F16", "float16": "F16", "bf16": "BF16", "bfloat16": "BF16"}


def dtype_name(dtype: torch.dtype) -> str:
    return _BY_DTYPE[dtype]


def dtype_from_name(name: str) -> torch.dtype:
    key = _ALIASES.get(name.lower(), name.upper())
    try:
        return _BY_NAME[key]
    except KeyError:
        raise UsageError(f"unknown dtype {name!r} (use fp32, fp16, bf16 or a safetensors name)") from None
