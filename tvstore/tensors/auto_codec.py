"""Pick, per tensor, the smallest payload whose error stays under a bound.

``choose_codec`` encodes the tensor with every candidate, decodes it at the
tensor's own dtype (what a reader will see), and keeps the smallest payload
whose relative L2 error is at most ``max_error``; ties go to the earlier
candidate. Lossless is always tried last (and wins whenever it is smaller),
so a tensor is never stored worse than the bound (a zero tensor is exact under every codec, so it costs
the 1-byte zero payload of the first candidate).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tvstore.codecs.base import Codec
from tvstore.codecs.lossless import Lossless
from tvstore.codecs.quant import Quant
from tvstore.codecs.sparse import Sparse
from tvstore.codecs.ternary import Ternary
from tvstore.tensors.metrics import ErrorStats


def default_candidates() -> list[Codec]:
    """The ladder ``--codec auto`` tries: cheap sign/sparse codes first, then k-bit, then fp16 sparse.

    Low-rank is left out (an SVD per tensor is expensive on large matrices
    and fine-tune deltas are rarely low-rank); pass it explicitly to try it.
    """
    ladder: list[Codec] = [Ternary(density=d) for d in (0.05, 0.1, 0.2, 0.3)]
    ladder += [Quant(bits=b, granularity="group", group_size=128) for b in (2, 3, 4, 8)]
    ladder += [Quant(bits=b) for b in (2, 3, 4, 8)]
    ladder += [Sparse(density=d, values="fp16") for d in (0.01, 0.05, 0.1, 0.25, 0.5)]
    return ladder


def choose_codec(
    tau: torch.Tensor, candidates: Sequence[Codec] | None = None, max_error: float = 0.1
) -> tuple[Codec, bytes, ErrorStats]:
    """(codec, payload, error) of the smallest candidate with rel L2 <= ``max_error``; lossless otherwise."""
    if not max_error >= 0:
        raise ValueError(f"max_error must be a non-negative number, got {max_error!r}")
    shape, dtype = tuple(tau.shape), tau.dtype
    best: tuple[Codec, bytes, ErrorStats] | None = None
    ladder = list(candidates) if candidates is not None else default_candidates()
    for codec in [*ladder, Lossless()]:
        try:
            payload = codec.encode(tau)
        except ValueError:
            continue  # e.g. non-finite entries: this codec cannot take the tensor
        if best is not None and len(payload) >= len(best[1]):
            continue
        stats = ErrorStats.of(tau, codec.decode(payload, shape, dtype))
        if codec.exact or stats.rel_l2 <= max_error:
            best = (codec, payload, stats)
    assert best is not None, "lossless always meets the bound"
    return best
