"""Low-rank task vectors: truncated SVD factors, or a PEFT LoRA adapter's own factors.

A tensor of two or more dims is viewed as a matrix (dim 0) x (the rest) and
stored as factors ``B`` (m x r) and ``A`` (r x n) with ``delta = B @ A * scale``.
For an SVD ``U S V^T``, ``B = U_r sqrt(S_r)`` and ``A = sqrt(S_r) V_r^T`` (balanced,
so fp16/bf16 factors keep their range) and ``scale = 1``. The rank is ``rank``,
or, when ``energy`` is set, the smallest rank whose singular values keep that
fraction of ``sum S^2`` (capped at ``rank`` unless ``rank`` is None).

Tensors of fewer than two dims (biases, norms) are encoded with the
``fallback`` codec (default ``lossless``); the payload records which path was
taken (and the fallback's full config), so decoding needs nothing else. So is
a matrix whose rank-r factors would hold at least as many entries as the
matrix itself (``r (m + n) >= m n``, e.g. any rank at or above ``min(m, n) / 2``
for a square one): low-rank never stores more than the exact path would. A
fixed ``rank`` too high for every matrix of a model is refused before
anything is encoded (:meth:`Lowrank.check_shapes`), since it would store the
whole model with the fallback.

The product is summed rank-1 term by rank-1 term in float32 with separate
multiply and add operations, never through BLAS, so a rebuild is
bit-identical on every machine (BLAS kernels sum in CPU-dependent order).
"""

from __future__ import annotations

import dataclasses
import json
import struct
from collections.abc import Sequence

import numpy as np
import torch

from tvstore.codecs import bitpack, buffers, framing
from tvstore.codecs.base import Codec, Shape, get_codec, param, register_codec
from tvstore.codecs.values import check_value_dtype, decode_values, encode_values
from tvstore.errors import CodecError
from tvstore.util.bounds import POSITIVE_INT, UNIT_OPEN_CLOSED

_VERSION = 1
FACTORS, FALLBACK = 0, 1
_FACTOR_HEADER = struct.Struct("<BQQQd")  # path, rows, cols, rank, scale
_BLOCK_ENTRIES = 1 << 16  # 256 KiB of float32 per row block: fits L2


def matrix_shape(shape: Shape) -> tuple[int, int]:
    rows = shape[0]
    return rows, int(np.prod(shape[1:]))


def svd_factors(matrix: torch.Tensor, rank: int | None, energy: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Balanced truncated-SVD factors (B, A) of a float matrix."""
    u, s, vh = torch.linalg.svd(matrix.to(torch.float32), full_matrices=False)
    r = s.numel() if rank is None else min(rank, s.numel())
    if energy is not None:
        sq = s.to(torch.float64) ** 2
        kept = torch.cumsum(sq, 0) / sq.sum()
        r = min(r, int(torch.searchsorted(kept, torch.tensor([energy], dtype=torch.float64)).item()) + 1)
    root = s[:r].sqrt()
    return u[:, :r] * root, root[:, None] * vh[:r]


def lowrank_payload_from_factors(b: torch.Tensor, a: torch.Tensor, scale: float = 1.0, factors: str = "fp32") -> bytes:
    """A ``lowrank`` payload for ``delta = b @ a * scale``, stored exactly as given (at ``factors`` dtype).

    For a PEFT LoRA module pass ``b = lora_B.weight`` (out x r), ``a = lora_A.weight``
    (r x in) and ``scale = lora_alpha / r`` (``lora_alpha / sqrt(r)`` with rslora;
    per-module r and alpha from ``rank_pattern``/``alpha_pattern``). With
    ``fan_in_fan_out`` the base weight is stored transposed (in x out), so pass
    ``b = lora_A.weight.T`` and ``a = lora_B.weight.T``. Decode with any
    ``lowrank`` codec config and the base weight's shape.
    """
    check_value_dtype(factors, "factors")
    if b.ndim != 2 or a.ndim != 2 or b.shape[1] != a.shape[0]:
        raise ValueError(f"factors must be (m x r) and (r x n), got {tuple(b.shape)} and {tuple(a.shape)}")
    m, r = b.shape
    n = a.shape[1]
    if scale == 0.0 or not (bool(b.any()) and bool(a.any())):
        return bitpack.ZERO_PAYLOAD
    header = _FACTOR_HEADER.pack(FACTORS, m, n, r, float(scale))
    sections = encode_values(b.detach().reshape(-1), factors) + encode_values(a.detach().reshape(-1), factors)
    return framing.pack(_VERSION, header, sections)


def product(b: torch.Tensor, a: torch.Tensor, scale: float) -> torch.Tensor:
    """float32 ``b @ a * scale`` in a fixed order of IEEE operations (machine-independent)."""
    m, n = b.shape[0], a.shape[1]
    out = buffers.zeros(m * n, torch.float32).reshape(m, n)
    rows = max(1, _BLOCK_ENTRIES // max(1, n))
    term = buffers.empty(min(m, rows) * n, torch.float32).reshape(min(m, rows), n)
    for start in range(0, m, rows):  # row blocks that stay in cache across the rank loop
        block, tmp = out[start : start + rows], term[: min(rows, m - start)]
        for j in range(b.shape[1]):  # one whole-block update per rank, never per element
            torch.mul(b[start : start + rows, j : j + 1], a[j : j + 1, :], out=tmp)
            block.add_(tmp)
    if scale != 1.0:
        out.mul_(torch.tensor(scale, dtype=torch.float32))
    return out


def _unpack(data: bytes) -> tuple[bytes, list[bytes]]:
    version, header, sections = framing.unpack(data)
    if version != _VERSION:
        raise ValueError(f"lowrank payload version {version} is newer than this tvstore")
    return header, sections


def _factors(header: bytes, sections: list[bytes]) -> tuple[torch.Tensor, torch.Tensor, float]:
    _, m, n, r, scale = _FACTOR_HEADER.unpack(header)
    b, used = decode_values(sections, torch.float32)
    a, _ = decode_values(sections[used:], torch.float32)
    return b.reshape(m, r), a.reshape(r, n), scale


def payload_factors(data: bytes) -> tuple[torch.Tensor, torch.Tensor, float] | None:
    """``(B, A, scale)`` of a factors payload as stored (float32); None for a zero or fallback payload.

    A LoRA export copies these, so an adapter pushed in goes back out with the same factors.
    """
    if data == bitpack.ZERO_PAYLOAD:
        return None
    header, sections = _unpack(data)
    return None if header[0] == FALLBACK else _factors(header, sections)


def _factors_smaller(rank: int, m: int, n: int) -> bool:
    """Whether rank-``rank`` factors of an m x n matrix hold fewer entries than the matrix."""
    return min(rank, m, n) * (m + n) < m * n


def _break_even(m: int, n: int) -> int:
    """The largest rank whose factors are smaller than an m x n matrix (0 if none)."""
    return -(-m * n // (m + n)) - 1


def _parse_fallback(spec: str) -> Codec:
    from tvstore.codecs.spec import parse_codec_spec  # spec imports the registry; keep this module importable first

    try:
        codec = parse_codec_spec(spec)
    except CodecError as exc:
        raise ValueError(f"fallback: {exc}") from None
    if codec.codec_id == "lowrank":
        raise ValueError("fallback must not be lowrank itself")
    return codec


@register_codec
@dataclasses.dataclass(frozen=True)
class Lowrank(Codec):
    """Truncated SVD (``rank``, or kept ``energy`` fraction capped at ``rank``); ``factors`` dtype."""

    codec_id = "lowrank"
    rank: int | None = param(16, POSITIVE_INT, optional=True)
    energy: float | None = param(None, UNIT_OPEN_CLOSED, optional=True)
    factors: str = "fp32"
    fallback: str = "lossless"

    def validate(self) -> None:
        if self.rank is None and self.energy is None:
            raise ValueError("rank and energy cannot both be null")
        check_value_dtype(self.factors, "factors")
        _parse_fallback(self.fallback)

    def check_shapes(self, shapes: Sequence[Shape]) -> None:
        """Refuse a fixed ``rank`` at which no matrix's factors would be smaller than the matrix."""
        matrices = [matrix_shape(s) for s in shapes if len(s) >= 2]
        if self.rank is None or self.energy is not None or not matrices:
            return
        if not any(_factors_smaller(self.rank, m, n) for m, n in matrices):
            best = max(_break_even(m, n) for m, n in matrices)
            raise ValueError(f"rank {self.rank} is too high for every matrix of this model (its factors would be "
                             f"larger than the matrix); use rank <= {best}")

    def encode(self, tensor: torch.Tensor) -> bytes:
        if tensor.ndim < 2:
            return self._fallback_payload(tensor)
        if not bool(torch.isfinite(tensor).all()):
            raise ValueError("lowrank cannot encode inf or nan entries")
        if not bool(tensor.any()):
            return bitpack.ZERO_PAYLOAD
        m, n = matrix_shape(tuple(tensor.shape))
        if self.rank is not None and not _factors_smaller(self.rank, m, n):
            return self._fallback_payload(tensor)
        matrix = tensor.detach().reshape(m, n)
        peak = float(matrix.abs().max())
        b, a = svd_factors(matrix.to(torch.float64) / peak, self.rank, self.energy)  # unit range: no fp32 overflow
        if not _factors_smaller(b.shape[1], m, n):  # an energy target that needs (nearly) full rank
            return self._fallback_payload(tensor)
        return lowrank_payload_from_factors(b, a, peak, self.factors)

    def _fallback_payload(self, tensor: torch.Tensor) -> bytes:
        inner = _parse_fallback(self.fallback)
        config = json.dumps(inner.get_config(), sort_keys=True).encode()
        header = struct.pack("<B", FALLBACK) + config
        return framing.pack(_VERSION, header, [inner.encode(tensor)])

    def decode(self, data: bytes, shape: Shape, dtype: torch.dtype) -> torch.Tensor:
        if data == bitpack.ZERO_PAYLOAD:
            return torch.zeros(shape, dtype=dtype)
        header, sections = _unpack(data)
        if header[0] == FALLBACK:
            return get_codec(json.loads(header[1:])).decode(sections[0], shape, dtype)
        _, m, n, _, _ = _FACTOR_HEADER.unpack(header)
        if len(shape) < 2 or matrix_shape(shape) != (m, n):
            raise ValueError(f"lowrank payload is a {m} x {n} matrix, not shape {shape}")
        return buffers.convert(product(*_factors(header, sections)), dtype).reshape(shape)
