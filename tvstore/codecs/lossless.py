"""Exact storage: byte planes of bit-rotated floats, each zstd-compressed.

The top plane of an exact fine-tune's bits XOR its base's is mostly zeros
(sign and exponent rarely change), and zstd's Huffman literals cannot spend
less than one bit per byte on it. When its 15 most frequent byte values cover
all but 1/256 of the entries, version 2 stores it as 4-bit codes into a
16-entry table instead (two entries per byte, so the entropy coder's floor
halves; code 15 marks the rare other values, kept as coded positions and
bytes). Decoding is one byte-table lookup per two entries; the other planes
are unchanged, and version-1 payloads decode as before.

Encoding probes each large plane on a sample before compressing it (near-random
mantissa planes of base weights are stored raw without paying zstd for them);
decoding joins the planes and undoes the rotation in one cache-sized pass,
straight into a numpy buffer (huge pages; see :mod:`tvstore.codecs.buffers`),
reading raw planes in place from the payload.
"""

from __future__ import annotations

import dataclasses
import math
import struct

import numpy as np
import torch

from tvstore.codecs import bitpack, framing, planes
from tvstore.codecs.base import Codec, Shape, param, register_codec
from tvstore.util.bounds import Bounds

_VERSION, _VERSION_TOP_CODES = 1, 2
_ESCAPE = 15  # the 4-bit code of a top-plane value outside the table
_MAX_ESCAPES = 1 / 256  # top planes with more values outside the 15 most frequent stay zstd planes


@register_codec
@dataclasses.dataclass(frozen=True)
class Lossless(Codec):
    """Bit-exact for every dtype. ``level`` is zstd's compression level."""

    codec_id = "lossless"
    exact = True
    keeps_payload = False
    level: int = param(1, Bounds(int, 1, 22))

    def encode(self, tensor: torch.Tensor) -> bytes:
        bits = planes.as_uint(tensor)
        rotate = tensor.is_floating_point()
        header = struct.pack("<BB", bits.dtype.itemsize, int(rotate))
        byte_planes = planes.rotated_planes(bits, rotate)
        top = _top_codes(byte_planes[0]) if len(byte_planes) > 1 else None
        if top is None:
            return framing.pack(_VERSION, header, byte_planes, self.level, probe=True)
        byte_planes[:1] = top  # the plane itself goes before compressing: a push holds less at once
        return framing.pack(_VERSION_TOP_CODES, header, byte_planes, self.level, probe=True)

    def decode(self, data: bytes, shape: Shape, dtype: torch.dtype) -> torch.Tensor:
        out = np.empty(math.prod(shape) * dtype.itemsize, dtype=np.uint8)  # numpy memory: huge pages for large tensors
        return planes.from_uint(self._join(data, out), shape, dtype)

    def decode_into(self, data: bytes, out: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Decode straight into ``out`` when it has the stored dtype (no allocation, no copy), else convert."""
        if out.dtype != dtype or not out.is_contiguous():
            return super().decode_into(data, out, dtype)
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
        """The byte planes (most significant first), the byte width and whether bits were rotated."""
        version, header, sections = framing.unpack_views(data)
        if version not in (_VERSION, _VERSION_TOP_CODES):
            raise ValueError(f"lossless payload version {version} is newer than this tvstore")
        width, rotated = struct.unpack("<BB", header)
        if version == _VERSION_TOP_CODES:
            sections = [_top_plane(sections[:4], len(sections[4])), *sections[4:]]
        n = len(sections[0]) if sections else 0
        if nbytes != n * width:
            raise ValueError(f"lossless payload holds {n * width} bytes, the output has {nbytes}")
        return sections, width, bool(rotated)

    def _join(self, data: bytes, out: np.ndarray) -> np.ndarray:
        sections, width, rotated = self._sections(data, out.nbytes)
        return planes.join_rotated(sections, width, rotated, out)


def _top_codes(plane: np.ndarray) -> list[bytes | np.ndarray] | None:
    """The top plane as (table, packed 4-bit codes, escape positions, escape bytes), or None if too spread.

    Each pair of bytes is one 16-bit index into a 64 Ki-entry table of packed
    code pairs (cache-resident), and each step's escapes are found while its
    codes are in cache: a handful of passes over L2, not over memory.
    """
    sample = plane[:: max(1, plane.size >> 16)]  # ~64Ki entries pick the table; the escapes are counted exactly
    counts = np.bincount(sample, minlength=256)
    table = np.argsort(-counts, kind="stable")[:_ESCAPE].astype(np.uint8)
    if sample.size - counts[table].sum() > _MAX_ESCAPES * sample.size:
        return None
    code_of = np.full(256, _ESCAPE, dtype=np.uint8)
    code_of[table] = np.arange(_ESCAPE, dtype=np.uint8)
    pair_code = ((code_of[:, None] << 4) | code_of[None, :]).reshape(-1)  # [first byte * 256 + second]
    n, whole = plane.size, plane.size // 2
    pairs = plane[: 2 * whole].view(">u2")  # first byte high: packed as bitpack packs
    packed = np.empty(-(-n // 2), dtype=np.uint8)
    if n % 2:  # the last code's partner is padding: code 0, never read back
        packed[-1] = code_of[plane[-1]] << 4
    shifted = np.empty(min(bitpack.LOOKUP_STEP, whole), dtype=np.uint8)
    found = [np.flatnonzero(packed[whole:] >= 0xF0) * 2 + 2 * whole]
    for start in range(0, whole, bitpack.LOOKUP_STEP):
        stop = min(start + bitpack.LOOKUP_STEP, whole)
        codes = packed[start:stop]
        bitpack.take_into(pair_code, pairs[start:stop], codes)
        low = np.left_shift(codes, 4, out=shifted[: codes.size])  # the second code in the high nibble
        found += [np.flatnonzero(codes >= 0xF0) * 2 + 2 * start, np.flatnonzero(low >= 0xF0) * 2 + 2 * start + 1]
    escapes = np.sort(np.concatenate(found))
    if escapes.size > _MAX_ESCAPES * n:
        return None
    return [table.tobytes(), packed, bitpack.encode_indices(escapes, n), plane[escapes]]


def _top_plane(sections: list, n: int) -> np.ndarray:
    """Inverse of :func:`_top_codes`: the ``n`` bytes of the top plane."""
    table, codes, escapes, values = sections
    lookup = np.zeros(_ESCAPE + 1, dtype=np.uint8)
    lookup[:_ESCAPE] = np.frombuffer(table, dtype=np.uint8)
    plane = bitpack.lookup(codes, 4, n, lookup)
    plane[bitpack.decode_indices(bytes(escapes), n)] = np.frombuffer(values, dtype=np.uint8)
    return plane
