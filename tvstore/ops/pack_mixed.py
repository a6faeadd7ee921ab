"""``pack --codec mixed:bits=B``: per tensor, the best use of a bit budget across codecs.

RTVQ's allocator chooses among bit widths of one codec. At sub-bit budgets
the best form differs by tensor: a shared quantized mean with 1-bit offsets
suits tensors the tasks move alike, TALL's shared vector plus masks suits
tensors they move differently, per-task sign codes or a mixed-precision SVD
suit tensors where one task dominates or the delta is low-rank. So every
option below is *measured* on each tensor (its real stored bits, shared
payloads counted once, and the summed squared error over the tasks) and the
same Lagrangian greedy as RTVQ (:func:`tvstore.codecs.rtvq.allocate_bits`)
spends the budget where the measured error per byte falls fastest.

Each option is a group packer: the T task tensors of one name in, T
component lists out (the core abstraction), so a reader needs nothing new.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch

from tvstore.codecs.base import Codec
from tvstore.codecs.encoded import EncodedComponent
from tvstore.codecs.quant import Quant
from tvstore.codecs.rtvq import DEFAULT_PAIRS, Candidate, rtvq_pack
from tvstore.codecs.spec import parse_codec_spec
from tvstore.codecs.tall import tall_pack
from tvstore.tensors.components import delta_of_encoded

GroupPacker = Callable[[Sequence[torch.Tensor]], list[list[EncodedComponent]]]

#: per-task codecs the mixed allocator may give a tensor (each task its own payload)
PER_TASK = (
    "sign:density=0.02", "sign:density=0.05", "sign:density=0.1", "sign:density=0.2", "sign",
    "quant:bits=2,granularity=group,group_size=128,clip=mse", "svdmix:rank=8,top=2",
)
#: TALL options: shared multi-task vector codec (quantized; lossless would cost 32/T bit per parameter)
TALL_SHARED = (2, 4)


def _per_task(codec: Codec, taus: Sequence[torch.Tensor]) -> list[list[EncodedComponent]]:
    return [[EncodedComponent(codec.get_config(), codec.encode(tau))] for tau in taus]


def options() -> dict[str, GroupPacker]:
    """Every option by label: RTVQ pairs (MSE-clipped), TALL with a quantized shared vector, per-task codecs."""
    out: dict[str, GroupPacker] = {
        f"rtvq:base_bits={b},offset_bits={o},clip=mse": partial(rtvq_pack, b_base=b, b_offset=o, clip="mse")
        for b, o in DEFAULT_PAIRS
    }
    for bits in TALL_SHARED:
        shared = Quant(bits=bits, granularity="group", group_size=128, clip="mse")
        out[f"tall:shared=quant:bits={bits}"] = partial(tall_pack, codec=shared)
    out.update({spec: partial(_per_task, parse_codec_spec(spec)) for spec in PER_TASK})
    return out


def stored_bits(packed: list[list[EncodedComponent]]) -> float:
    """Bits the group stores: each distinct payload once (shared parts), every mask."""
    payloads = {c.payload for comps in packed for c in comps}
    masks = sum(len(c.mask or b"") for comps in packed for c in comps)
    return 8.0 * (sum(map(len, payloads)) + masks)


def squared_error(taus: Sequence[torch.Tensor], packed: list[list[EncodedComponent]]) -> float:
    """Summed squared error over the tasks, as a reader will decode the components."""
    total = 0.0
    for tau, comps in zip(taus, packed, strict=True):
        approx = delta_of_encoded(comps, tuple(tau.shape), tau.dtype)
        total += float(((tau.to(torch.float64) - approx.to(torch.float64)) ** 2).sum())
    return total


def measure(taus: Sequence[torch.Tensor], packers: dict[str, GroupPacker]) -> list[Candidate]:
    """One measured candidate per option (label, stored bits of all tasks, summed squared error)."""
    cands = []
    for label, pack in packers.items():
        packed = pack(taus)
        cands.append(Candidate(label, stored_bits(packed), squared_error(taus, packed)))  # type: ignore[arg-type]
    return cands
