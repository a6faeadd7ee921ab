"""RTVQ: residual quantization of a group of task vectors on one base, and bit allocation.

For the T task vectors of one tensor name:

    base   = mean_t tau_t                        quantized at b_base bits
    o_t    = tau_t - deq(base)                   quantized at b_offset bits
    tau_t ~= deq(base) + deq(o_t)

The offsets are taken against the *dequantized* base, decoded at the tensor's
own dtype exactly as a reader will decode it, so the base's quantization error
is corrected by the offsets. Every task's component list starts with the same
base component (byte-identical payload, so content addressing stores it once)
followed by its own offset component.

``clip="mse"`` gives the base and the offsets error-optimal clipped ranges
(:mod:`tvstore.codecs.quant`); the offsets are still taken against the
dequantized (clipped) base, so clipping the base costs only what the offsets
cannot correct.

Bit allocation (beyond the paper's code): :func:`allocate_bits` picks one
(b_base, b_offset) pair per tensor under a budget in bits per parameter per
task, minimizing the summed squared reconstruction error. See its docstring.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

from tvstore.codecs.quant import Quant
from tvstore.codecs.encoded import EncodedComponent

#: (b_base, b_offset) pairs tried by :func:`rtvq_candidates` by default
DEFAULT_PAIRS: tuple[tuple[int, int], ...] = ((2, 1), (3, 1), (3, 2), (4, 2), (4, 3), (8, 2), (8, 3), (8, 4), (8, 8))


def check_group(taus: Sequence[torch.Tensor]) -> None:
    if not taus:
        raise ValueError("a group needs at least one task vector")
    shape, dtype = taus[0].shape, taus[0].dtype
    for tau in taus[1:]:
        if tau.shape != shape or tau.dtype != dtype:
            raise ValueError(f"group tensors differ: {tuple(tau.shape)} {tau.dtype} vs {tuple(shape)} {dtype}")


def group_mean(taus: Sequence[torch.Tensor]) -> torch.Tensor:
    """mean_t tau_t, summed in float32 in task order (deterministic), as float32."""
    total = torch.zeros(taus[0].shape, dtype=torch.float32)
    for tau in taus:
        total.add_(tau.to(torch.float32))
    return total.div_(len(taus))


def rtvq_pack(
    taus: Sequence[torch.Tensor],
    b_base: int = 3,
    b_offset: int = 2,
    granularity: str = "tensor",
    group_size: int = 128,
    clip: str = "minmax",
) -> list[list[EncodedComponent]]:
    """Per task: [shared base component, own offset component] (B3O2 by default)."""
    check_group(taus)
    shape, dtype = tuple(taus[0].shape), taus[0].dtype
    base_codec = Quant(bits=b_base, granularity=granularity, group_size=group_size, clip=clip)
    offset_codec = Quant(bits=b_offset, granularity=granularity, group_size=group_size, clip=clip)
    base_payload = base_codec.encode(group_mean(taus).to(dtype))
    base_hat = base_codec.decode(base_payload, shape, dtype)
    out = []
    for tau in taus:
        offset = tau.to(torch.float32) - base_hat.to(torch.float32)
        base = EncodedComponent(base_codec.get_config(), base_payload, extra={"role": "rtvq-base"})
        own = EncodedComponent(offset_codec.get_config(), offset_codec.encode(offset), extra={"role": "rtvq-offset"})
        out.append([base, own])
    return out


@dataclass(frozen=True)
class Candidate:
    """One way to store a tensor: its size in bits (all tasks together) and squared error (all tasks).

    ``choice`` names the way: a (b_base, b_offset) pair here, an option label for other allocators.
    """

    choice: Hashable
    bits: float
    sq_error: float


def rtvq_candidates(
    taus: Sequence[torch.Tensor],
    pairs: Iterable[tuple[int, int]] = DEFAULT_PAIRS,
    granularity: str = "tensor",
    group_size: int = 128,
    clip: str = "minmax",
) -> list[Candidate]:
    """Measure each (b_base, b_offset): real stored bits (shared base once) and summed squared error."""
    cands = []
    for b_base, b_offset in pairs:
        packed = rtvq_pack(taus, b_base, b_offset, granularity, group_size, clip)
        bits = 8.0 * (len(packed[0][0].payload) + sum(len(p[1].payload) for p in packed))
        err = 0.0
        for tau, comps in zip(taus, packed, strict=True):
            approx = sum(_decode(c, tau) for c in comps)
            err += float(((tau.to(torch.float64) - approx) ** 2).sum())
        cands.append(Candidate((b_base, b_offset), bits, err))
    return cands


def _decode(comp: EncodedComponent, like: torch.Tensor) -> torch.Tensor:
    codec = Quant(**{k: v for k, v in comp.codec.items() if k != "id"})
    return codec.decode(comp.payload, tuple(like.shape), like.dtype).to(torch.float64)


def _lower_hull(cands: Sequence[Candidate]) -> list[Candidate]:
    """Candidates on the lower convex hull of (bits, error), by increasing bits.

    Dominated points (more bits, no less error) and points above the hull can
    never be the best use of a bit, so the greedy only walks the hull.
    """
    pts = sorted(cands, key=lambda c: (c.bits, c.sq_error))
    frontier: list[Candidate] = []
    for c in pts:
        if frontier and c.sq_error >= frontier[-1].sq_error:
            continue  # dominated
        while len(frontier) >= 2:
            a, b = frontier[-2], frontier[-1]
            # drop b if it lies on or above the segment a -> c
            if (b.sq_error - a.sq_error) * (c.bits - a.bits) >= (c.sq_error - a.sq_error) * (b.bits - a.bits):
                frontier.pop()
            else:
                break
        frontier.append(c)
    return frontier


def allocate_bits(
    candidates: Mapping[str, Sequence[Candidate]],
    num_params: Mapping[str, int],
    budget_bits_per_param: float,
) -> dict[str, Candidate]:
    """Choose one candidate per tensor so total bits <= budget * total params, minimizing summed squared error.

    ``candidates[name]`` are measured options for tensor ``name``; ``bits`` is
    whatever unit the budget is in (for RTVQ: stored bits of all T tasks
    together, so a per-task budget is passed as ``budget * T``, which
    :func:`rtvq_allocate` does).

    Algorithm (greedy marginal error reduction per bit, i.e. the Lagrangian
    walk along each tensor's convex hull): every tensor starts at its cheapest
    option; then, repeatedly, the upgrade with the largest error reduction per
    extra bit among all tensors is taken if it still fits the budget (else that
    tensor stops upgrading). Restricted to each tensor's lower convex hull the
    marginal gains decrease, so this is optimal up to the last, partly-fitting
    upgrade. Raises ``ValueError`` when even the cheapest options exceed the budget.
    """
    budget = budget_bits_per_param * sum(num_params[name] for name in candidates)
    hulls = {name: _lower_hull(cands) for name, cands in candidates.items()}
    for name, hull in hulls.items():
        if not hull:
            raise ValueError(f"tensor {name!r} has no candidates")
    level = dict.fromkeys(hulls, 0)
    used = sum(h[0].bits for h in hulls.values())
    if used > budget:
        raise ValueError(
            f"budget of {budget_bits_per_param} bits per parameter is below the cheapest choice "
            f"({used / max(1, sum(num_params[n] for n in candidates)):.3f})"
        )

    def gain(name: str) -> tuple[float, str] | None:
        hull, i = hulls[name], level[name]
        if i + 1 >= len(hull):
            return None
        d_bits = hull[i + 1].bits - hull[i].bits
        d_err = hull[i].sq_error - hull[i + 1].sq_error
        return (-(d_err / d_bits) if d_bits > 0 else float("-inf"), name)

    heap = [g for g in map(gain, sorted(hulls)) if g is not None]
    heapq.heapify(heap)
    while heap:
        _, name = heapq.heappop(heap)
        hull, i = hulls[name], level[name]
        extra = hull[i + 1].bits - hull[i].bits
        if used + extra > budget:
            continue  # this tensor's next step does not fit; others' may
        used += extra
        level[name] = i + 1
        nxt = gain(name)
        if nxt is not None:
            heapq.heappush(heap, nxt)
    return {name: hulls[name][level[name]] for name in hulls}


def rtvq_allocate(
    groups: Mapping[str, Sequence[torch.Tensor]],
    budget_bits_per_param: float,
    pairs: Iterable[tuple[int, int]] = DEFAULT_PAIRS,
    granularity: str = "tensor",
    group_size: int = 128,
    clip: str = "minmax",
) -> dict[str, tuple[int, int]]:
    """(b_base, b_offset) per tensor name under a budget in stored bits per parameter *per task*.

    The paper's B3O2 costs about 2 + 3/T bits per parameter per task; real
    payloads are usually smaller (zstd squeezes the codes) plus a few header bytes.
    """
    pairs = tuple(pairs)
    cands = {name: rtvq_candidates(taus, pairs, granularity, group_size, clip) for name, taus in groups.items()}
    tasks = {len(taus) for taus in groups.values()}
    if len(tasks) != 1:
        raise ValueError("every tensor name must have the same number of task vectors")
    (t,) = tasks
    sizes = {name: taus[0].numel() for name, taus in groups.items()}
    return choose_pairs(cands, sizes, t, budget_bits_per_param)


def choose_pairs(
    cands: Mapping[str, Sequence[Candidate]], sizes: Mapping[str, int], tasks: int, budget_bits_per_param: float
) -> dict[str, Hashable]:
    """The chosen candidate's ``choice`` per tensor (for RTVQ a (b_base, b_offset) pair), under a budget
    per parameter per task.

    Split from :func:`rtvq_allocate` so a caller that measures candidates one
    tensor at a time (never holding every tensor's taus) can allocate too.
    """
    cheapest = sum(min(c.bits for c in cs) for cs in cands.values()) / (tasks * max(1, sum(sizes.values())))
    if cheapest > budget_bits_per_param:
        raise ValueError(
            f"a budget of {budget_bits_per_param:g} bits per parameter per task is below the cheapest "
            f"choice for these tensors ({cheapest:.3f}, headers included)"
        )
    chosen = allocate_bits(cands, sizes, budget_bits_per_param * tasks)
    return {name: cand.choice for name, cand in chosen.items()}
