"""Sparse task vectors: top-k by magnitude (``sparse``) and random drop (``dare``).

Both store the kept positions with :func:`bitpack.encode_indices` (bitmap or
gaps, whichever is smaller) and the kept values at fp32/fp16/bf16
(:mod:`tvstore.codecs.values`). Dropped entries decode to zero.

``sparse`` keeps ``k = max(1, floor(density * n + 1/2))`` entries (capped at
n) with the largest ``|tau|``, per tensor; among equal magnitudes at the
threshold the lower positions win, so the support is a deterministic
function of the tensor (no dependence on a sort's tie order). Exactly-zero
entries are never stored, so a tensor with fewer than k non-zeros keeps all
of them.

``dare`` keeps each entry with probability ``1 - p`` and stores kept entries
as ``tau / (1 - p)``. Its randomness is a PCG64 stream seeded by
``SeedSequence([seed, h0, h1, h2, h3])`` where ``h`` are the four 32-bit words of
``blake2b-128(dtype, shape, tensor bytes)``; entry i is kept when the i-th raw
64-bit draw is ``< floor((1-p) * 2^64)``. PCG64 raw output and SeedSequence
are fixed algorithms, so the same tensor and seed give the same support on
every run, machine and NumPy version, while different tensors get
independent draws.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import struct

import numpy as np
import torch

from tvstore.codecs import bitpack, buffers, framing
from tvstore.codecs.base import Codec, Shape, param, register_codec
from tvstore.codecs.values import check_value_dtype, decode_values, encode_values
from tvstore.util.bounds import UNIT_CLOSED_OPEN, UNIT_OPEN_CLOSED, Bounds

_VERSION = 1
_HEADER = struct.Struct("<Q")  # n
_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def keep_count(density: float, n: int) -> int:
    """How many entries ``sparse`` keeps of ``n`` at ``density``."""
    if n == 0:
        return 0
    return min(n, max(1, math.floor(density * n + 0.5)))


def magnitudes(tensor: torch.Tensor) -> np.ndarray:
    """|tau| flattened, as a numpy array (bf16 widened to fp32, exactly)."""
    flat = tensor.detach().reshape(-1)
    if flat.dtype not in (torch.float32, torch.float64, torch.float16):
        flat = flat.to(torch.float32)
    return flat.abs().numpy()


def topk_positions(mags: np.ndarray, k: int) -> np.ndarray:
    """Sorted positions of the k largest magnitudes; ties at the threshold go to lower positions."""
    n = mags.size
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    if k >= n:
        return np.arange(n, dtype=np.int64)
    threshold = np.partition(mags, n - k)[n - k]
    above = np.flatnonzero(mags > threshold)
    ties = np.flatnonzero(mags == threshold)[: k - above.size]
    return np.sort(np.concatenate((above, ties))).astype(np.int64)


def encode_sparse(tensor: torch.Tensor, positions: np.ndarray, values: torch.Tensor, value_dtype: str) -> bytes:
    """Payload holding ``values`` at ``positions`` of the flattened tensor, zeros elsewhere."""
    n = tensor.numel()
    if positions.size == 0:
        return bitpack.ZERO_PAYLOAD
    sections = [bitpack.encode_indices(positions, n), *encode_values(values, value_dtype)]
    return framing.pack(_VERSION, _HEADER.pack(n), sections)


def decode_sparse(data: bytes, shape: Shape, dtype: torch.dtype) -> torch.Tensor:
    if data == bitpack.ZERO_PAYLOAD:
        return torch.zeros(shape, dtype=dtype)
    version, header, sections = framing.unpack(data)
    if version != _VERSION:
        raise ValueError(f"sparse payload version {version} is newer than this tvstore")
    (n,) = _HEADER.unpack(header)
    expected = int(np.prod(shape)) if shape else 1
    if n != expected:
        raise ValueError(f"sparse payload holds {n} entries, shape {shape} needs {expected}")
    vals, _ = decode_values(sections[1:], dtype)
    bitmap = bitpack.decode_bitmap(sections[0], n)
    if bitmap is not None:  # dense support: gather, don't scatter (on the raw bits: numpy has no bf16)
        bits = _BITS[vals.element_size()]
        placed = bitpack.scatter_by_bitmap(bitmap, vals.contiguous().view(bits).numpy())
        return torch.from_numpy(placed).view(dtype).reshape(shape)
    positions = torch.from_numpy(bitpack.decode_indices(sections[0], n))
    out = buffers.zeros(n, dtype)
    out[positions] = vals
    return out.reshape(shape)


def _nonzero_only(tensor: torch.Tensor, positions: np.ndarray) -> np.ndarray:
    flat = tensor.detach().reshape(-1)
    return positions[(flat[torch.from_numpy(positions)] != 0).numpy()]


@register_codec
@dataclasses.dataclass(frozen=True)
class Sparse(Codec):
    """Top-k magnitude sparsification; kept entries exact at ``values`` dtype."""

    codec_id = "sparse"
    density: float = param(0.1, UNIT_OPEN_CLOSED)
    values: str = "fp16"

    def validate(self) -> None:
        check_value_dtype(self.values)

    def support(self, tensor: torch.Tensor) -> np.ndarray:
        """Positions this codec keeps (sorted)."""
        pos = topk_positions(magnitudes(tensor), keep_count(self.density, tensor.numel()))
        return _nonzero_only(tensor, pos)

    def encode(self, tensor: torch.Tensor) -> bytes:
        pos = self.support(tensor)
        vals = tensor.detach().reshape(-1)[torch.from_numpy(pos)]
        return encode_sparse(tensor, pos, vals, self.values)

    def decode(self, data: bytes, shape: Shape, dtype: torch.dtype) -> torch.Tensor:
        return decode_sparse(data, shape, dtype)


def tensor_hash_words(tensor: torch.Tensor) -> list[int]:
    """Four 32-bit words of blake2b-128 over dtype, shape and the tensor's bytes."""
    flat = tensor.detach().contiguous().reshape(-1)
    raw = flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{str(flat.dtype)}|{tuple(tensor.shape)}|".encode())
    h.update(raw)
    return list(struct.unpack("<4I", h.digest()))


def dare_keep_mask(tensor: torch.Tensor, p: float, seed: int) -> np.ndarray:
    """Boolean keep mask of DARE, reproducible from (tensor, p, seed) alone."""
    n = tensor.numel()
    if p == 0:
        return np.ones(n, dtype=bool)
    gen = np.random.PCG64(np.random.SeedSequence([seed, *tensor_hash_words(tensor)]))
    threshold = np.uint64(math.floor((1.0 - p) * 2.0**64))
    return gen.random_raw(n) < threshold


@register_codec
@dataclasses.dataclass(frozen=True)
class Dare(Codec):
    """DARE: keep with probability 1-p, rescale kept entries by 1/(1-p)."""

    codec_id = "dare"
    p: float = param(0.9, UNIT_CLOSED_OPEN)
    seed: int = param(0, Bounds(int, 0, 2**63 - 1))
    values: str = "fp16"

    def validate(self) -> None:
        check_value_dtype(self.values)

    def support(self, tensor: torch.Tensor) -> np.ndarray:
        return _nonzero_only(tensor, np.flatnonzero(dare_keep_mask(tensor, self.p, self.seed)).astype(np.int64))

    def encode(self, tensor: torch.Tensor) -> bytes:
        pos = self.support(tensor)
        vals = tensor.detach().reshape(-1)[torch.from_numpy(pos)].to(torch.float64) / (1.0 - self.p)
        return encode_sparse(tensor, pos, vals, self.values)

    def decode(self, data: bytes, shape: Shape, dtype: torch.dtype) -> torch.Tensor:
        return decode_sparse(data, shape, dtype)
