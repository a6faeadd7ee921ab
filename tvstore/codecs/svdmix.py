"""Mixed precision over singular directions (Delta-CoMe): more bits for the top singular vectors.

A matrix (dim 0 x the rest) is factored by truncated SVD, ``delta ~= B A``
with balanced factors ``B = U_r sqrt(S_r)``, ``A = sqrt(S_r) V_r^T`` (as
:mod:`tvstore.codecs.lowrank`). Delta-CoMe's observation: a fine-tune
delta's singular values fall off fast, so the first directions carry most of
the energy and deserve more bits, the long tail fewer. Here the first ``top``
directions' factor rows/columns are quantized at ``top_bits``, the other
``rank - top`` at ``bits``, each direction with its own error-optimal range
(``quant`` with ``granularity=channel, clip=mse``):

    B A ~= sum_{i < top} deq_top(b_i) deq_top(a_i)^T + sum_{top <= i < rank} deq(b_i) deq(a_i)^T

Cost: ``rank (m + n)`` codes (``top`` of them at ``top_bits``) plus two
floats and an integer per direction, before zstd; at rank 32 with 4 directions
at 8 bits and 28 at 3 bits a 384 x 384 matrix costs about 0.6 bit/param.
Tensors of fewer than two dims, and matrices whose factors would hold at
least as many entries as the matrix, take the ``fallback`` codec (as lowrank).
The product is summed in lowrank's fixed order, so decoding is bit-identical
on every machine.
"""

from __future__ import annotations

import dataclasses
import struct

import torch

from tvstore.codecs import bitpack, buffers, framing
from tvstore.codecs.base import Codec, Shape, param, register_codec
from tvstore.codecs.lowrank import _factors_smaller, _parse_fallback, matrix_shape, product, svd_factors
from tvstore.codecs.quant import Quant
from tvstore.util.bounds import POSITIVE_INT, Bounds

_VERSION = 1
FACTORS, FALLBACK = 0, 1
_HEADER = struct.Struct("<BQQQQ")  # path, rows, cols, rank, top
_BITS = Bounds(int, 1, 8)


@register_codec
@dataclasses.dataclass(frozen=True)
class SvdMix(Codec):
    """Truncated SVD at ``rank``; the first ``top`` directions at ``top_bits``, the rest at ``bits``."""

    codec_id = "svdmix"
    rank: int = param(32, POSITIVE_INT)
    top: int = param(4, Bounds(int, 0, None))
    top_bits: int = param(8, _BITS)
    bits: int = param(3, _BITS)
    fallback: str = "quant:bits=8"

    def validate(self) -> None:
        if self.top > self.rank:
            raise ValueError(f"top must be at most rank ({self.rank}), got {self.top}")
        _parse_fallback(self.fallback)

    def _quant(self, bits: int) -> Quant:
        return Quant(bits=bits, granularity="channel", clip="mse")

    def encode(self, tensor: torch.Tensor) -> bytes:
        if not bool(torch.isfinite(tensor).all()):
            raise ValueError("svdmix cannot encode inf or nan entries")
        if not bool(tensor.any()):
            return bitpack.ZERO_PAYLOAD
        shape = tuple(tensor.shape)
        if len(shape) < 2 or not _factors_smaller(self.rank, *matrix_shape(shape)):
            return self._fallback(tensor)
        m, n = matrix_shape(shape)
        b, a = svd_factors(tensor.detach().reshape(m, n), self.rank, None)
        r, top = a.shape[0], min(self.top, a.shape[0])
        sections = []
        for rows, bits in ((slice(0, top), self.top_bits), (slice(top, r), self.bits)):
            codec = self._quant(bits)
            for part in (b.T[rows].contiguous(), a[rows].contiguous()):
                sections.append(codec.encode(part) if part.numel() else b"")
        return framing.pack(_VERSION, _HEADER.pack(FACTORS, m, n, r, top), sections)

    def _fallback(self, tensor: torch.Tensor) -> bytes:
        inner = _parse_fallback(self.fallback)
        header = _HEADER.pack(FALLBACK, 0, 0, 0, 0)
        return framing.pack(_VERSION, header, [self.fallback.encode(), inner.encode(tensor)])

    def decode(self, data: bytes, shape: Shape, dtype: torch.dtype) -> torch.Tensor:
        if data == bitpack.ZERO_PAYLOAD:
            return torch.zeros(shape, dtype=dtype)
        version, header, sections = framing.unpack(data)
        if version != _VERSION:
            raise ValueError(f"svdmix payload version {version} is newer than this tvstore")
        path, m, n, r, top = _HEADER.unpack(header)
        if path == FALLBACK:
            return _parse_fallback(sections[0].decode()).decode(sections[1], shape, dtype)
        if len(shape) < 2 or (m, n) != matrix_shape(shape):
            raise ValueError(f"svdmix payload holds a {m} x {n} matrix, shape {shape} does not fit")
        bt, a = [], []
        for i, rows in enumerate((top, r - top)):
            if rows:
                bt.append(_dequant(sections[2 * i], (rows, m)))
                a.append(_dequant(sections[2 * i + 1], (rows, n)))
        out = product(torch.cat(bt).T.contiguous(), torch.cat(a), 1.0)
        return buffers.convert(out, dtype).reshape(shape)


def _dequant(payload: bytes, shape: tuple[int, int]) -> torch.Tensor:
    """A factor block as float32; the quant payload carries its own bits and ranges."""
    return Quant().decode(payload, shape, torch.float32)
