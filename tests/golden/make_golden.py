"""Write golden fixtures for cases that have none yet; never touch existing ones.

Each fixture is three files under ``tests/golden/<codec_id>/``: ``<case>.json``
(codec config, shape, dtype), ``<case>.bin`` (the encoded payload) and
``<case>.safetensors`` (the decoded tensor, key ``decoded``). The test decodes
every ``.bin`` with today's code and demands the stored tensor bit for bit,
so blobs written by any past release stay decodable forever. To add a codec,
add its cases to ``CASES`` and run ``python tests/golden/make_golden.py``;
a new parameter of an old codec gets new cases the same way (only cases
without a ``.bin`` are written).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from tvstore.codecs import get_codec
from tvstore.codecs.lowrank import lowrank_payload_from_factors

HERE = Path(__file__).parent
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
#: the integer widths an exact push's ``xor`` component stores its bits as
XOR_DTYPES = {"i16": torch.int16, "i32": torch.int32}

#: codec id -> [(case name, codec config, dtype name)]
CASES: dict[str, list[tuple[str, dict, str]]] = {
    "lossless": [(f"{d}", {"id": "lossless", "level": 3}, d) for d in [*DTYPES, *XOR_DTYPES]]
    + [(f"{d}_close", {"id": "lossless", "level": 3}, d) for d in XOR_DTYPES],  # version 2: a coded top plane
    "raw": [(f"{d}", {"id": "raw"}, d) for d in DTYPES],
    "quant": [
        ("b2_tensor_fp32", {"id": "quant", "bits": 2, "granularity": "tensor", "group_size": 128}, "fp32"),
        ("b3_channel_bf16", {"id": "quant", "bits": 3, "granularity": "channel", "group_size": 128}, "bf16"),
        ("b4_group_fp16", {"id": "quant", "bits": 4, "granularity": "group", "group_size": 32}, "fp16"),
        ("b8_tensor_fp32", {"id": "quant", "bits": 8, "granularity": "tensor", "group_size": 128}, "fp32"),
        ("b2_tensor_mse_fp32", {"id": "quant", "bits": 2, "granularity": "tensor", "group_size": 128, "clip": "mse"}, "fp32"),
        ("b3_channel_mse_bf16", {"id": "quant", "bits": 3, "granularity": "channel", "group_size": 128, "clip": "mse"}, "bf16"),
    ],
    "sparse": [
        (f"{v}_fp32", {"id": "sparse", "density": 0.2, "values": v}, "fp32") for v in ("fp32", "fp16", "bf16")
    ] + [("gaps_bf16", {"id": "sparse", "density": 0.02, "values": "fp16"}, "bf16")],
    "dare": [("p05_fp32", {"id": "dare", "p": 0.5, "seed": 7, "values": "fp16"}, "fp32")],
    "ternary": [
        ("d01_fp32", {"id": "ternary", "density": 0.1, "alpha": 1.0}, "fp32"),
        ("d002_positions_fp32", {"id": "ternary", "density": 0.02, "alpha": 1.0}, "fp32"),
        ("d05_codes_fp16", {"id": "ternary", "density": 0.5, "alpha": 2.0}, "fp16"),
    ],
    "sign": [
        ("d1_rows_fp32", {"id": "sign", "density": 1.0, "scales": "row"}, "fp32"),
        ("d02_positions_fp32", {"id": "sign", "density": 0.02, "scales": "row"}, "fp32"),
        ("d03_codes_tensor_bf16", {"id": "sign", "density": 0.3, "scales": "tensor"}, "bf16"),
        ("d05_vector_fp16", {"id": "sign", "density": 0.5, "scales": "row"}, "fp16"),
    ],
    "svdmix": [
        ("r6_top2_fp32", {"id": "svdmix", "rank": 6, "top": 2, "top_bits": 8, "bits": 3, "fallback": "quant:bits=8"}, "fp32"),
        ("r4_top0_bf16", {"id": "svdmix", "rank": 4, "top": 0, "top_bits": 8, "bits": 2, "fallback": "quant:bits=8"}, "bf16"),
        ("fallback_vector_fp16", {"id": "svdmix", "rank": 4, "top": 1, "top_bits": 8, "bits": 3, "fallback": "quant:bits=8"}, "fp16"),
    ],
    "lowrank": [
        ("svd_fp32", {"id": "lowrank", "rank": 4, "energy": None, "factors": "fp32", "fallback": "lossless"}, "fp32"),
        ("svd_fp16factors_bf16", {"id": "lowrank", "rank": 2, "energy": None, "factors": "fp16", "fallback": "lossless"}, "bf16"),
        ("fallback_vector_fp32", {"id": "lowrank", "rank": 4, "energy": None, "factors": "fp32", "fallback": "quant:bits=8"}, "fp32"),
        ("lora_factors_fp32", {"id": "lowrank", "rank": 16, "energy": None, "factors": "fp32", "fallback": "lossless"}, "fp32"),
    ],
}


def sample(case: str, dtype: torch.dtype) -> torch.Tensor:
    """A small delta-like tensor (heavy-tailed, with exact zeros), deterministic per case.

    For an integer dtype: the XOR of a weight-like float tensor's bits with a slightly changed copy's
    (changed by 1e-4 of its scale for a ``close`` case, a fine-tune's typical step: few exponents change).
    """
    if not dtype.is_floating_point:
        w = sample(case + "w", torch.float16 if dtype.itemsize == 2 else torch.float32) * 1e3
        step = 1e-1 if "close" in case else 1e2
        return (w + sample(case + "d", w.dtype) * step).view(dtype) ^ w.view(dtype)
    g = torch.Generator().manual_seed(sum(map(ord, case)))
    shape = (40,) if "vector" in case else (16, 24)
    x = torch.randn(shape, generator=g) * 1e-3
    x = x * torch.randn(shape, generator=g).abs() ** 2
    x[torch.rand(shape, generator=g) < 0.05] = 0.0
    return x.to(dtype)


def encode(case: str, config: dict, tensor: torch.Tensor) -> bytes:
    if case.startswith("lora"):
        g = torch.Generator().manual_seed(1)
        b, a = torch.randn(tensor.shape[0], 3, generator=g), torch.randn(3, tensor.shape[1], generator=g)
        return lowrank_payload_from_factors(b * 1e-2, a, scale=16 / 3)
    return get_codec(config).encode(tensor)


def write_missing(root: Path = HERE) -> list[Path]:
    written = []
    for codec_id, cases in CASES.items():
        folder = root / codec_id
        folder.mkdir(parents=True, exist_ok=True)
        for case, config, dtype_name in cases:
            if (folder / f"{case}.bin").exists():
                continue  # old payloads are the contract: never regenerate them
            dtype = {**DTYPES, **XOR_DTYPES}[dtype_name]
            tensor = sample(case, dtype)
            payload = encode(case, config, tensor)
            decoded = get_codec(config).decode(payload, tuple(tensor.shape), dtype)
            meta = {"config": config, "shape": list(tensor.shape), "dtype": dtype_name}
            (folder / f"{case}.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
            (folder / f"{case}.bin").write_bytes(payload)
            save_file({"decoded": decoded.contiguous()}, str(folder / f"{case}.safetensors"))
            written.append(folder / f"{case}.bin")
    return written


if __name__ == "__main__":
    for path in write_missing(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print("wrote", path)
