"""Sign codes with least-squares scales: BitDelta (every entry) and ternary (a top-k support).

Keep the support ``S`` (every entry at ``density=1``, as BitDelta; else the
top-k magnitudes, exactly :class:`tvstore.codecs.sparse.Sparse`'s support)
and store one sign per kept entry plus one float32 scale per row (a slice
along dim 0; a 1-D tensor is one row, ``scales="tensor"`` uses one scale):

    x_hat_i = a_r * sign(x_i)  for i in S,  0 elsewhere
    a_r     = mean_{i in S_r} |x_i|

``a_r`` is the least-squares scale: ``sum_{i in S_r} (x_i - a sign(x_i))^2``
is minimal at ``a = mean |x_i|``, so this is never worse in L2 than
ComPEFT's ``alpha * std`` (:mod:`tvstore.codecs.ternary`) on the same support,
and per-row scales follow rows of different size (BitDelta's per-matrix scale
is ``scales="tensor"``). At ``density=1`` an exact zero is coded as ``+a``.

The support and signs use :mod:`tvstore.codecs.signed_support`'s two
layouts, the smaller one stored (*codes* cost about 1 bit per entry when
every entry is kept; *positions* win at low densities).
"""

from __future__ import annotations

import dataclasses
import struct

import numpy as np
import torch

from tvstore.codecs import bitpack, buffers, framing
from tvstore.codecs.base import Codec, Shape, param, register_codec
from tvstore.codecs.signed_support import (
    codes_section, positions_sections, signs_from_codes, support_from_positions,
)
from tvstore.codecs.sparse import Sparse
from tvstore.util.bounds import UNIT_OPEN_CLOSED

_VERSION = 1
_HEADER = struct.Struct("<QQB")  # n, rows, layout
CODES, POSITIONS = 0, 1
_SCALES = ("row", "tensor")


def row_count(shape: Shape, scales: str) -> int:
    """Number of scales: one per slice along dim 0 (``row``), or one (``tensor``, 1-D, scalars)."""
    return shape[0] if scales == "row" and len(shape) >= 2 and shape[0] > 0 else 1


def least_squares_scales(x: np.ndarray, keep: np.ndarray, rows: int) -> np.ndarray:
    """float32 mean |x| over the kept entries of each row (0 for rows with none kept)."""
    mags = np.abs(x).reshape(rows, -1) * keep.reshape(rows, -1)
    counts = keep.reshape(rows, -1).sum(axis=1)
    return (mags.sum(axis=1) / np.maximum(counts, 1)).astype(np.float32)


@register_codec
@dataclasses.dataclass(frozen=True)
class Sign(Codec):
    """Signs on a top-``density`` support times a per-row (or per-tensor) least-squares scale."""

    codec_id = "sign"
    density: float = param(1.0, UNIT_OPEN_CLOSED)
    scales: str = "row"

    def validate(self) -> None:
        if self.scales not in _SCALES:
            raise ValueError(f"scales must be one of {', '.join(_SCALES)}, got {self.scales!r}")

    def support(self, tensor: torch.Tensor) -> np.ndarray:
        """Boolean keep mask over the flattened tensor."""
        n = tensor.numel()
        if self.density >= 1:
            return np.ones(n, dtype=bool)
        keep = np.zeros(n, dtype=bool)
        keep[Sparse(density=self.density).support(tensor)] = True
        return keep

    def encode(self, tensor: torch.Tensor) -> bytes:
        if not bool(torch.isfinite(tensor).all()):
            raise ValueError("sign cannot encode inf or nan entries")
        n = tensor.numel()
        if not bool(tensor.any()):
            return bitpack.ZERO_PAYLOAD
        x = tensor.detach().reshape(-1).to(torch.float64).numpy()
        keep = self.support(tensor)
        rows = row_count(tuple(tensor.shape), self.scales)
        scales = least_squares_scales(x, keep, rows)
        pos = np.flatnonzero(keep).astype(np.int64)
        negative = x[pos] < 0
        head = [scales.tobytes()]
        dense = framing.pack(_VERSION, _HEADER.pack(n, rows, CODES), [*head, codes_section(pos, negative, n)])
        if self.density >= 1:
            return dense
        sparse = framing.pack(_VERSION, _HEADER.pack(n, rows, POSITIONS), [*head, *positions_sections(pos, negative, n)])
        return dense if len(dense) <= len(sparse) else sparse

    def decode(self, data: bytes, shape: Shape, dtype: torch.dtype) -> torch.Tensor:
        if data == bitpack.ZERO_PAYLOAD:
            return torch.zeros(shape, dtype=dtype)
        version, header, sections = framing.unpack(data)
        if version != _VERSION:
            raise ValueError(f"sign payload version {version} is newer than this tvstore")
        n, rows, layout = _HEADER.unpack(header)
        expected = int(np.prod(shape)) if shape else 1
        if n != expected or n % rows:
            raise ValueError(f"sign payload holds {n} entries in {rows} rows, shape {shape} needs {expected}")
        scales = torch.from_numpy(np.frombuffer(sections[0], dtype=np.float32).copy())[:, None]
        if layout == CODES:
            signs = signs_from_codes(sections[1], n)
        else:
            signs = np.zeros(n, dtype=np.int8)
            pos, negative = support_from_positions(sections[1:], n)
            signs[pos] = 1 - 2 * negative.view(np.int8)
        out = buffers.convert(torch.from_numpy(signs).reshape(rows, -1), torch.float32).mul_(scales)
        return buffers.convert(out, dtype).reshape(shape)
