"""Exact storage with no transform: the payload is the tensor's bytes, little-endian, as in a safetensors file.

What base weights are stored as. A base compresses only ~1.2x losslessly (its
mantissas are near-random), yet it is read on every rebuild; stored plain,
reading it costs one copy from the page cache instead of zstd plus a plane
join, and a writable buffer (what ``LocalBlobStore.read`` returns) is
wrapped as a tensor without any copy at all. Deltas, which do compress,
keep using :mod:`tvstore.codecs.lossless`.
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import torch

from tvstore.codecs.base import Codec, Shape, register_codec

assert sys.byteorder == "little", "raw payloads are little-endian, as safetensors files are"


def _nbytes(shape: Shape, dtype: torch.dtype) -> int:
    n = dtype.itemsize
    for d in shape:
        n *= d
    return n


@register_codec
@dataclasses.dataclass(frozen=True)
class Raw(Codec):
    """Bit-exact for every dtype; size = the tensor's size."""

    codec_id = "raw"
    exact = True

    def encode(self, tensor: torch.Tensor) -> bytes:
        flat = tensor.detach().contiguous().reshape(-1)
        return flat.view(torch.uint8).numpy().tobytes()

    def decode(self, data: bytes | bytearray | memoryview, shape: Shape, dtype: torch.dtype) -> torch.Tensor:
        """A tensor over ``data`` itself when it is writable (no copy), else over a copy."""
        self._check(data, shape, dtype)
        if memoryview(data).readonly:
            data = bytearray(data)
        if not memoryview(data).nbytes:
            return torch.empty(shape, dtype=dtype)
        return torch.frombuffer(data, dtype=dtype).reshape(shape)

    def decode_into(self, data: bytes | bytearray | memoryview, out: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Copy ``data`` into ``out`` (of the stored dtype, else converted through a decoded copy)."""
        if out.dtype != dtype or not out.is_contiguous():
            return super().decode_into(data, out, dtype)
        self._check(data, tuple(out.shape), out.dtype)
        out.reshape(-1).view(torch.uint8).numpy()[:] = np.frombuffer(data, dtype=np.uint8)
        return out

    @staticmethod
    def _check(data: bytes | bytearray | memoryview, shape: Shape, dtype: torch.dtype) -> None:
        if memoryview(data).nbytes != _nbytes(shape, dtype):
            raise ValueError(f"raw payload holds {memoryview(data).nbytes} bytes, {dtype} {shape} needs "
                             f"{_nbytes(shape, dtype)}")
