"""Exact storage: byte planes of bit-rotated floats, each zstd-compressed."""

from __future__ import annotations

import dataclasses
import struct

import torch

from tvstore.codecs import framing, planes
from tvstore.codecs.base import Codec, Shape, register_codec

_VERSION = 1


@register_codec
@dataclasses.dataclass(frozen=True)
class Lossless(Codec):
    """Bit-exact for every dtype. ``level`` is zstd's compression level."""

    codec_id = "lossless"
    exact = True
    level: int = 3

    def __post_init__(self) -> None:
        if not 1 <= self.level <= 22:
            raise ValueError(f"level must be in 1..22, got {self.level}")

    def encode(self, tensor: torch.Tensor) -> bytes:
        bits = planes.as_uint(tensor)
        rotate = tensor.is_floating_point()
        if rotate:
            bits = planes.rotate_left(bits)
        header = struct.pack("<BB", bits.dtype.itemsize, int(rotate))
        return framing.pack(_VERSION, header, planes.split_planes(bits), self.level)

    def decode(self, data: bytes, shape: Shape, dtype: torch.dtype) -> torch.Tensor:
        version, header, sections = framing.unpack(data)
        if version != _VERSION:
            raise ValueError(f"lossless payload version {version} is newer than this tvstore")
        width, rotated = struct.unpack("<BB", header)
        bits = planes.join_planes(sections, width)
        if rotated:
            bits = planes.rotate_right(bits)
        return planes.from_uint(bits, shape, dtype)
