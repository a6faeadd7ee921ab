"""Exact storage: byte planes of bit-rotated floats, each zstd-compressed.

Encoding probes each large plane on a sample before compressing it (near-random
mantissa planes of base weights are stored raw without paying zstd for them);
decoding joins the planes and undoes the rotation in one cache-sized pass,
straight into a numpy buffer (huge pages; see :mod:`tvstore.codecs.buffers`),
reading raw planes in place from the payload. The payload layout is unchanged
since version 1.
"""

from __future__ import annotations

import dataclasses
import struct

import numpy as np
import torch

from tvstore.codecs import framing, planes
from tvstore.codecs.base import Codec, Shape, param, register_codec
from tvstore.util.bounds import Bounds

_VERSION = 1


@register_codec
@dataclasses.dataclass(frozen=True)
class Lossless(Codec):
    """Bit-exact for every dtype. ``level`` is zstd's compression level."""

    codec_id = "lossless"
    exact = True
    level: int = param(1, Bounds(int, 1, 22))

    def encode(self, tensor: torch.Tensor) -> bytes:
        bits = planes.as_uint(tensor)
        rotate = tensor.is_floating_point()
        header = struct.pack("<BB", bits.dtype.itemsize, int(rotate))
        return framing.pack(_VERSION, header, planes.rotated_planes(bits, rotate), self.level, probe=True)

    def decode(self, data: bytes, shape: Shape, dtype: torch.dtype) -> torch.Tensor:
        n = 1
        for d in shape:
            n *= d
        out = np.empty(n * dtype.itemsize, dtype=np.uint8)  # numpy memory: huge pages for large tensors
        return planes.from_uint(self._join(data, out), shape, dtype)

    def decode_into(self, data: bytes, out: torch.Tensor) -> torch.Tensor:
        """Decode straight into ``out`` (contiguous, of the stored dtype and size): no allocation, no copy."""
        if not out.is_contiguous():
            raise ValueError("decode_into needs a contiguous output tensor")
        self._join(data, out.reshape(-1).view(torch.uint8).numpy())
        return out

    def xor_into(self, data: bytes, out: torch.Tensor) -> torch.Tensor:
        """``out ^= decode(data)`` bitwise, the planes XORed into ``out`` chunk by chunk.

        What an ``xor`` component's rebuild does: no decoded tensor and no joined
        copy in between, so a rebuild holds the output and the compressed planes only.
        """
        if not out.is_contiguous():
            raise ValueError("xor_into needs a contiguous output tensor")
        sections, width, rotated = self._sections(data, out.numel() * out.element_size())
        if rotated or width != out.element_size():  # not what pushes write; decode, then XOR
            ints = planes.int_view(out.dtype)
            out.view(ints).bitwise_xor_(self.decode(data, tuple(out.shape), ints))
            return out
        planes.xor_planes_into(sections, width, out.reshape(-1).view(torch.uint8).numpy())
        return out

    def _sections(self, data: bytes, nbytes: int) -> tuple[list, int, bool]:
        version, header, sections = framing.unpack_views(data)
        if version != _VERSION:
            raise ValueError(f"lossless payload version {version} is newer than this tvstore")
        width, rotated = struct.unpack("<BB", header)
        n = len(sections[0]) if sections else 0
        if nbytes != n * width:
            raise ValueError(f"lossless payload holds {n * width} bytes, the output has {nbytes}")
        return sections, width, bool(rotated)

    def _join(self, data: bytes, out: np.ndarray) -> np.ndarray:
        sections, width, rotated = self._sections(data, out.nbytes)
        return planes.join_rotated(sections, width, rotated, out)
