"""ComPEFT: keep the top-k support, replace kept values by ``+-alpha * sigma``.

``sigma`` is the population standard deviation of the whole tensor (all
entries, computed in float64), ``alpha`` a user parameter (default 1). The
support is exactly :class:`tvstore.codecs.sparse.Sparse`'s at the same
density (so exactly-zero entries are never kept); the payload is the coded
support, one sign bit per kept entry (packed, zstd) and one float32
magnitude ``v = float32(alpha * sigma)``. Every decoded entry is 0 or
``+-v`` rounded to the output dtype, with the sign of ``tau``.

The support and signs use :mod:`tvstore.codecs.signed_support`'s two
layouts: *sparse* (its *positions*: coded positions + k sign bits) and, for
dense supports, *codes*, which decode without any scatter, keeping decoding
above 1 GB/s at high densities, where scattering through a dense random
support is slow. The codes layout is chosen for supports of at least n/16 entries
when it is at most 25% larger than the sparse layout (measured on MiniLM
fine-tune deltas it is 3-28% larger at densities 0.1-0.3, and decodes
3-5x faster); otherwise the sparse layout.
"""

from __future__ import annotations

import dataclasses
import struct

import numpy as np
import torch

from tvstore.codecs import bitpack, buffers, framing, planes
from tvstore.codecs.base import Codec, Shape, param, register_codec
from tvstore.codecs.signed_support import (
    codes_section, positions_sections, signs_from_codes, support_from_positions,
)
from tvstore.codecs.sparse import Sparse
from tvstore.util.bounds import UNIT_OPEN_CLOSED, Bounds

_VERSION = 1
_HEADER = struct.Struct("<QfB")  # n, magnitude, layout
#: the sign (0, +1, -1) of each 2-bit code 0..3, as float32: times the magnitude, the codes' lookup table
_CODE_SIGNS = torch.from_numpy(signs_from_codes(bitpack.pack_bits(np.arange(4), 2), 4)).to(torch.float32)
SPARSE, CODES = 0, 1


def magnitude(tensor: torch.Tensor, alpha: float) -> float:
    """float32(alpha * std(tau)) (saturated at float32's max), the one value every kept entry takes."""
    sigma = float(tensor.detach().to(torch.float64).std(correction=0)) if tensor.numel() else 0.0
    return float(np.float32(min(alpha * sigma, float(np.finfo(np.float32).max))))


@register_codec
@dataclasses.dataclass(frozen=True)
class Ternary(Codec):
    """ComPEFT ternary codec (``density`` of entries kept, ``alpha`` scales sigma)."""

    codec_id = "ternary"
    density: float = param(0.1, UNIT_OPEN_CLOSED)
    alpha: float = param(1.0, Bounds(float, 0, lo_open=True))

    def encode(self, tensor: torch.Tensor) -> bytes:
        if not bool(torch.isfinite(tensor).all()):
            raise ValueError("ternary cannot encode inf or nan entries")
        pos = Sparse(density=self.density).support(tensor)
        value = magnitude(tensor, self.alpha)
        if pos.size == 0 or value == 0.0:
            return bitpack.ZERO_PAYLOAD
        n = tensor.numel()
        negative = (tensor.detach().reshape(-1)[torch.from_numpy(pos)] < 0).numpy()
        sparse = framing.pack(_VERSION, _HEADER.pack(n, value, SPARSE), positions_sections(pos, negative, n))
        if pos.size < n // 16:  # position gaps always win there; skip building the codes
            return sparse
        dense = framing.pack(_VERSION, _HEADER.pack(n, value, CODES), [codes_section(pos, negative, n)])
        return dense if len(dense) <= 1.25 * len(sparse) else sparse

    def decode(self, data: bytes, shape: Shape, dtype: torch.dtype) -> torch.Tensor:
        if data == bitpack.ZERO_PAYLOAD:
            return torch.zeros(shape, dtype=dtype)
        version, header, sections = framing.unpack(data)
        if version != _VERSION:
            raise ValueError(f"ternary payload version {version} is newer than this tvstore")
        n, value, layout = _HEADER.unpack(header)
        expected = int(np.prod(shape)) if shape else 1
        if n != expected:
            raise ValueError(f"ternary payload holds {n} entries, shape {shape} needs {expected}")
        if layout == CODES:  # each 2-bit code looks up its value, computed once as float32 sign x value
            levels = _CODE_SIGNS * value
            return planes.from_uint(bitpack.lookup(sections[0], 2, n, planes.as_uint(buffers.convert(levels, dtype))),
                                    shape, dtype)
        positions, negative = map(torch.from_numpy, support_from_positions(sections, n))
        magnitude_t = torch.tensor(value, dtype=torch.float32).to(dtype)
        out = buffers.zeros(n, dtype)
        out[positions] = torch.where(negative, -magnitude_t, magnitude_t)
        return out.reshape(shape)
