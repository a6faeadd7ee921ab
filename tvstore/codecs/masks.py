"""Bit masks (TALL, EMR, sparse supports): one bit per parameter, zstd-packed.

An all-zero or all-one mask of any size packs to a few bytes, because zstd
collapses the runs that ``numpy.packbits`` leaves.
"""

from __future__ import annotations

import struct

import numpy as np
import torch
import zstandard

_VERSION = 1


def encode_mask(mask: torch.Tensor) -> bytes:
    """Pack a boolean tensor (any shape) into bytes, most significant bit first."""
    flat = mask.detach().reshape(-1).to(torch.bool).numpy()
    packed = np.packbits(flat, bitorder="big").tobytes()
    return struct.pack("<BQ", _VERSION, flat.size) + zstandard.ZstdCompressor(level=3).compress(packed)


def decode_mask(data: bytes, shape: tuple[int, ...]) -> torch.Tensor:
    version, n = struct.unpack_from("<BQ", data)
    if version != _VERSION:
        raise ValueError(f"mask format version {version} is newer than this tvstore")
    packed = np.frombuffer(zstandard.ZstdDecompressor().decompress(data[9:]), dtype=np.uint8)
    bits = np.unpackbits(packed, count=n, bitorder="big").astype(bool)
    expected = int(np.prod(shape)) if shape else 1
    if n != expected:
        raise ValueError(f"mask holds {n} bits, tensor of shape {shape} needs {expected}")
    return torch.from_numpy(bits).reshape(shape)
