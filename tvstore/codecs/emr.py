"""EMR-Merging: one unified vector plus a mask and a rescaler per task.

For the T task vectors of one tensor name:

    gamma    = sign(sum_t tau_t)
    M_t      = 1[tau_t * gamma > 0]
    tau_uni  = gamma * max_t |M_t ⊙ tau_t|
    lambda_t = sum |tau_t| / sum |M_t ⊙ tau_uni|
    tau_t   ~= lambda_t * M_t ⊙ tau_uni

Each task's component list is one component: ``tau_uni`` encoded with the
given codec (same bytes for every task), the task's mask, scale ``lambda_t``.

The paper computes ``lambda_t`` over the whole model; a packer sees one
tensor, so here it is per tensor (finer, never worse in L1). The two sums are
returned in each component's ``extra`` (``abs_tau``, ``abs_masked_uni``) so a
caller wanting the paper's model-wide rescaler can sum them over tensors and
overwrite ``scale``. When ``M_t ⊙ tau_uni`` is all zero, ``lambda_t`` is 1
(the component is zero anyway).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tvstore.codecs.base import Codec
from tvstore.codecs.lossless import Lossless
from tvstore.codecs.masks import encode_mask
from tvstore.codecs.rtvq import check_group
from tvstore.codecs.encoded import EncodedComponent


def emr_parts(taus: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor], list[tuple[float, float]]]:
    """(tau_uni as float32, masks M_t, per-task (sum|tau_t|, sum|M_t ⊙ tau_uni|) in float64)."""
    x = [tau.to(torch.float32) for tau in taus]
    total = torch.zeros_like(x[0])
    for t in x:
        total.add_(t)
    gamma = torch.sign(total)
    masks = [t * gamma > 0 for t in x]
    peak = torch.zeros_like(x[0])
    for t, m in zip(x, masks, strict=True):
        peak = torch.maximum(peak, torch.where(m, t.abs(), 0.0))
    uni = gamma * peak
    sums = [
        (float(t.abs().to(torch.float64).sum()), float(torch.where(m, uni.abs(), 0.0).to(torch.float64).sum()))
        for t, m in zip(x, masks, strict=True)
    ]
    return uni, masks, sums


def rescaler(abs_tau: float, abs_masked_uni: float) -> float:
    return abs_tau / abs_masked_uni if abs_masked_uni > 0 else 1.0


def emr_pack(taus: Sequence[torch.Tensor], codec: Codec | None = None) -> list[list[EncodedComponent]]:
    """Per task: [tau_uni (shared payload) with mask M_t and scale lambda_t]."""
    check_group(taus)
    codec = codec or Lossless()
    uni, masks, sums = emr_parts(taus)
    payload = codec.encode(uni.to(taus[0].dtype))
    return [
        [
            EncodedComponent(
                codec.get_config(),
                payload,
                scale=rescaler(*s),
                mask=encode_mask(m),
                extra={"role": "emr", "abs_tau": s[0], "abs_masked_uni": s[1]},
            )
        ]
        for m, s in zip(masks, sums, strict=True)
    ]
