"""Kept values of sparse codecs, stored at fp32, fp16 or bf16, as byte planes.

fp16 has a narrow range (max 65504), so values stored as fp16 are first
multiplied by a power of two ``2^e`` that puts the largest magnitude near the
top of that range; a power of two changes no mantissa bit, so a value is
exact up to fp16's 11-bit rounding (or the loss of bits of values more than
2^30 below the largest, which fp16 holds as subnormals) and never overflows.
"""

from __future__ import annotations

import math
import struct

import torch

from tvstore.codecs import planes

VALUE_DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_HEADER = struct.Struct("<Bi")  # value dtype index, power-of-two exponent


def check_value_dtype(name: str, param: str = "values") -> None:
    if name not in VALUE_DTYPES:
        raise ValueError(f"{param} must be one of {', '.join(VALUE_DTYPES)}, got {name!r}")


def _exponent(values: torch.Tensor, dtype: torch.dtype) -> int:
    """e such that values * 2^e fits ``dtype``: for fp16 the largest magnitude lands in
    [2^14, 2^15); fp32/bf16 are only rescaled when a value would overflow them
    (DARE's 1/(1-p) on a huge entry)."""
    top = float(values.abs().max()) if values.numel() else 0.0
    if top == 0.0 or not math.isfinite(top):
        return 0
    top_exp = math.frexp(top)[1]  # top = m * 2^top_exp, m in [0.5, 1)
    if dtype is torch.float16:
        return 15 - top_exp
    return 127 - top_exp if top_exp > 127 else 0


def encode_values(values: torch.Tensor, dtype_name: str) -> list[bytes]:
    """Header section + byte planes of ``values`` (1-D float) at ``dtype_name``."""
    dtype = VALUE_DTYPES[dtype_name]
    exp = _exponent(values, dtype)
    scaled = values.to(torch.float64) * (2.0**exp) if exp else values
    stored = scaled.to(dtype).contiguous()
    header = _HEADER.pack(list(VALUE_DTYPES).index(dtype_name), exp)
    return [header, *planes.split_planes(planes.as_uint(stored))]


def decode_values(sections: list[bytes], out_dtype: torch.dtype) -> tuple[torch.Tensor, int]:
    """(values as ``out_dtype``, number of sections consumed) from :func:`encode_values` output."""
    index, exp = _HEADER.unpack(sections[0])
    dtype = list(VALUE_DTYPES.values())[index]
    width = torch.empty(0, dtype=dtype).element_size()
    bits = planes.join_planes(sections[1 : 1 + width], width)
    stored = planes.from_uint(bits, (bits.size,), dtype)
    if exp:
        stored = (stored.to(torch.float64) * (2.0**-exp)).to(out_dtype)
    return stored.to(out_dtype), 1 + width

