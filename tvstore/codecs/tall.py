"""TALL masks: one shared multi-task vector plus one bit mask per task.

For the T task vectors of one tensor name:

    tau_MTL = sum_t tau_t                          (summed in float32, task order)
    m_t     = 1[ |tau_t| > lambda_t * |tau_MTL - tau_t| ]
    tau_t  ~= m_t ⊙ tau_MTL

Each task's component list is one component: ``tau_MTL`` encoded with the
given codec (the same payload bytes for every task, stored once) with the
task's mask. The mask is computed against the exact ``tau_MTL``, as in the
paper, whatever codec stores it.

TODO: the paper also allows a TIES-merged ``tau_MTL``; only the sum is
implemented (``merge="sum"``) until the merge engine exposes TIES as a
function of a list of tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tvstore.codecs.base import Codec
from tvstore.codecs.lossless import Lossless
from tvstore.codecs.masks import encode_mask
from tvstore.codecs.rtvq import check_group
from tvstore.codecs.encoded import EncodedComponent

DEFAULT_LAMBDA = 0.4


def multitask_vector(taus: Sequence[torch.Tensor]) -> torch.Tensor:
    """tau_MTL = sum_t tau_t in float32, in task order (deterministic)."""
    total = torch.zeros(taus[0].shape, dtype=torch.float32)
    for tau in taus:
        total.add_(tau.to(torch.float32))
    return total


def tall_masks(taus: Sequence[torch.Tensor], mtl: torch.Tensor, lambdas: Sequence[float]) -> list[torch.Tensor]:
    """m_t = |tau_t| > lambda_t * |tau_MTL - tau_t| (float32 arithmetic)."""
    wide = [tau.to(torch.float32) for tau in taus]
    return [t.abs() > lam * (mtl - t).abs() for t, lam in zip(wide, lambdas, strict=True)]


def tall_pack(
    taus: Sequence[torch.Tensor],
    lambdas: float | Sequence[float] = DEFAULT_LAMBDA,
    codec: Codec | None = None,
    merge: str = "sum",
) -> list[list[EncodedComponent]]:
    """Per task: [tau_MTL (shared payload) with the task's mask]."""
    check_group(taus)
    if merge != "sum":
        raise ValueError(f"merge must be 'sum' (TIES-merged tau_MTL is not implemented yet), got {merge!r}")
    lams = [float(lambdas)] * len(taus) if isinstance(lambdas, (int, float)) else [float(x) for x in lambdas]
    if len(lams) != len(taus):
        raise ValueError(f"lambdas has {len(lams)} values for {len(taus)} task vectors")
    if any(lam < 0 for lam in lams):
        raise ValueError(f"lambdas must be non-negative, got {lams}")
    codec = codec or Lossless()
    mtl = multitask_vector(taus)
    payload = codec.encode(mtl.to(taus[0].dtype))
    return [
        [EncodedComponent(codec.get_config(), payload, mask=encode_mask(m), extra={"role": "tall", "lambda": lam})]
        for m, lam in zip(tall_masks(taus, mtl, lams), lams, strict=True)
    ]
