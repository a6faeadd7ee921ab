"""Merge methods: pure functions from task-vector tensors to one merged delta.

Every method is ``fn(taus, weights, params, *, name, base)`` and returns the
merged *delta* for one tensor (theta = base + delta), so the streaming engine
can run any of them tensor by tensor. It runs in two steps: ``prepare``, an
optional in-place step on each input's row of one stacked fp32 buffer (trim,
weigh), independent across inputs so that rows can run on several threads,
then ``combine`` over the whole buffer. Both overwrite the buffer, so a merge
needs its inputs plus a few single-tensor temporaries. ``params`` holds the
shared parameters as scalars and the per-input ones (``density``, ``gamma``,
``epsilon``, ``mask_lambda``) as lists aligned with ``taus``; ``MethodSpec``
declares which is which, with defaults, so recipes can be validated.

The task-arithmetic family follows mergekit's ``GeneralizedTaskArithmeticMerge``
exactly (sparsify each tau, multiply by its weight, optional sign consensus,
optional normalisation by the summed (masked) weights, scale by ``lambda``), so
outputs coincide with mergekit's for the methods both tools have.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from tvstore.errors import UsageError
from tvstore.merge import sparsify as sp
from tvstore.util.bounds import FINITE, NON_NEGATIVE, POSITIVE_INT, UNIT_CLOSED_OPEN, UNIT_OPEN_CLOSED, Bounds

MergeFn = Callable[..., torch.Tensor]
#: ``prepare(row, i, weights, params, name)``: input ``i``'s step, in place on its row of the stacked buffer
RowFn = Callable[[torch.Tensor, int, Sequence[float], Mapping[str, Any], str], None]
REQUIRED = object()  # sentinel default: the recipe must give a value


@dataclass(frozen=True)
class Param:
    """One method parameter: its type, default, whether it is set per input, and its numeric range."""

    kind: type
    default: Any
    per_input: bool = False
    choices: tuple[Any, ...] | None = None
    bounds: Bounds | None = None


@dataclass(frozen=True)
class MethodSpec:
    """A merge method by name: its function and the parameters it understands."""

    name: str
    combine: MergeFn
    params: Mapping[str, Param] = field(default_factory=dict)
    #: linear mergekit-style methods accept the base itself as an input (a zero tau)
    base_as_input: bool = False
    prepare: RowFn | None = None

    def fn(self, taus: Sequence[torch.Tensor] | torch.Tensor, weights: Sequence[float], params: Mapping[str, Any], *,
           name: str, base: torch.Tensor | None = None) -> torch.Tensor:
        """The whole method: a list of tensors is stacked (copied); a stacked fp32 tensor is overwritten."""
        owned = isinstance(taus, torch.Tensor) and taus.dtype == torch.float32
        stacked = taus if owned else torch.stack([t.float() for t in taus])
        if self.prepare is not None:
            for i, row in enumerate(stacked):
                self.prepare(row, i, weights, params, name)
        return self.combine(stacked, weights, params, name=name, base=base)


_WEIGHT = Param(float, REQUIRED, per_input=True, bounds=FINITE)
_LAMBDA = Param(float, 1.0, bounds=FINITE)
_SEED = Param(int, 0, bounds=Bounds(int, 0, 2**63 - 1))
_COMMON = {
    "weight": _WEIGHT,
    "lambda": _LAMBDA,
    "normalize": Param(bool, False),
    "int8_mask": Param(bool, False),  # accepted for mergekit files; masks are bool here anyway
}


def _trim_and_weigh(sparsifier: str | None) -> RowFn:
    """Generalised task arithmetic's per-input step: sparsify, then multiply by the weight, as mergekit does."""
    def prepare(row: torch.Tensor, i: int, weights: Sequence[float], params: Mapping[str, Any], name: str) -> None:
        _sparsify(row, sparsifier, params, i, sp.rescale_norm(params.get("rescale", False)), name, inplace=True)
        row.mul_(torch.tensor(weights[i], dtype=torch.float32))

    return prepare


def _mix(consensus_: bool) -> MergeFn:
    """Generalised task arithmetic's combining step, operation for operation as mergekit does it.

    mergekit builds ``(tau * weight * mask).sum(0)`` from whole stacked
    tensors, a sign and a mask per input among them; here the sign election
    zeroes one row at a time, in place, with the same floating-point
    operations, so the merge gives the same bits with one bool mask at a time.
    """
    def combine(deltas: torch.Tensor, weights: Sequence[float], params: Mapping[str, Any], *, name: str,
                base: torch.Tensor | None = None) -> torch.Tensor:
        if consensus_:
            divisor = _keep_agreeing(deltas, weights, params.get("consensus", "sum"))
            divisor[divisor == 0] = 1
        else:
            w = torch.tensor(list(weights), dtype=torch.float32)
            divisor = w.reshape(-1, *[1] * (deltas.dim() - 1)).sum(dim=0)
            divisor[divisor.abs() < 1e-8] = 1
        mixed = deltas.sum(dim=0)
        if params.get("normalize", False):
            mixed /= divisor
        if params.get("lambda", 1.0) != 1:
            mixed *= params["lambda"]
        return mixed

    return combine


def _sparsify(tau: torch.Tensor, how: str | None, params: Mapping[str, Any], i: int, norm: str | None,
              name: str, *, inplace: bool = False) -> torch.Tensor:
    """Input ``i``'s trimmed tau; ``inplace`` overwrites ``tau`` with it (magnitude trimming without a copy)."""
    if how is None:
        return tau
    density = params["density"][i]
    if how == "magnitude":
        return sp.magnitude(tau, density, norm, inplace=inplace)
    if how == "outliers":
        trimmed = sp.magnitude_outliers(tau, density, params["gamma"][i], norm)
    else:
        gen = sp.tensor_generator(params.get("seed", 0), name, i)
        trimmed = sp.bernoulli(tau, density, norm, gen) if how == "random" else \
            sp.della_magprune(tau, density, params["epsilon"][i], norm, gen)
    return tau.copy_(trimmed) if inplace else trimmed


def elected_signs(deltas: torch.Tensor, method: str = "sum") -> torch.Tensor:
    """TIES sign election over the stacked (weighted) deltas: True where + wins.

    ``sum`` elects by summed (weighted) mass, as in the TIES paper; ``count``
    by a plain vote. Ties go to +.
    """
    if method == "sum":
        votes = deltas.sum(dim=0)
    else:
        votes = torch.zeros(deltas.shape[1:], dtype=deltas.dtype)
        for row in deltas:  # small integers: exact in any order, without a stacked sign tensor
            votes += row.sign()
    return votes >= 0


def agrees(row: torch.Tensor, elected: torch.Tensor) -> torch.Tensor:
    """Bool mask of one input's entries whose sign is the elected one; zero (trimmed) entries never agree."""
    return torch.where(elected, row > 0, row < 0)


def _keep_agreeing(deltas: torch.Tensor, weights: Sequence[float], method: str) -> torch.Tensor:
    """Zero, row by row in place, the entries against the elected sign; return the agreeing weights' sum."""
    elected = elected_signs(deltas, method)
    divisor = torch.zeros(deltas.shape[1:], dtype=torch.float32)
    for row, weight in zip(deltas, weights):
        agree = agrees(row, elected)
        row.mul_(agree)
        divisor.add_(agree, alpha=weight)
    return divisor


def consensus(taus: Sequence[torch.Tensor], weights: Sequence[float], params: Mapping[str, Any], *, name: str,
              base: torch.Tensor | None = None) -> torch.Tensor:
    """TALL consensus merge: keep tau_MTL only where at least ``k`` task masks select it.

    tau_MTL = sum_t w_t tau_t; m_t = |tau_t| > mask_lambda_t * |tau_MTL - tau_t|.
    """
    mtl = torch.zeros_like(taus[0], dtype=torch.float32)
    for tau, w in zip(taus, weights):
        mtl.add_(tau.float(), alpha=w)
    count = torch.zeros(mtl.shape, dtype=torch.int32)
    for tau, lam in zip(taus, params["mask_lambda"]):
        tau = tau.float()
        count += tau.abs() > (mtl - tau).abs_().mul_(lam)
    mtl.mul_(count >= params["k"])
    if params.get("lambda", 1.0) != 1:
        mtl *= params["lambda"]
    return mtl


def _spec(name: str, sparsifier: str | None, consensus_: bool, normalize: bool, rescale: bool,
          base_as_input: bool = False) -> MethodSpec:
    params = dict(_COMMON, normalize=Param(bool, normalize))
    if sparsifier is not None:
        params["density"] = Param(float, 1.0, per_input=True, bounds=UNIT_OPEN_CLOSED)
        params["rescale"] = Param(str, rescale, choices=(True, False, *sp.RESCALE_CHOICES))
    if sparsifier == "outliers":
        params["gamma"] = Param(float, 0.01, per_input=True, bounds=UNIT_CLOSED_OPEN)
    if sparsifier == "della":
        params["epsilon"] = Param(float, 0.15, per_input=True, bounds=UNIT_CLOSED_OPEN)
    if sparsifier in ("random", "della"):
        params["seed"] = _SEED
    if consensus_:
        params["consensus"] = Param(str, "sum", choices=("sum", "count"))
    return MethodSpec(name, _mix(consensus_), params, base_as_input, _trim_and_weigh(sparsifier))


METHODS: dict[str, MethodSpec] = {
    s.name: s
    for s in (
        _spec("task_arithmetic", None, False, normalize=False, rescale=False),
        _spec("linear", None, False, normalize=True, rescale=False, base_as_input=True),
        _spec("ties", "magnitude", True, normalize=True, rescale=False),
        _spec("magnitude_prune", "magnitude", False, normalize=False, rescale=False),
        _spec("dare_linear", "random", False, normalize=False, rescale=True),
        _spec("dare_ties", "random", True, normalize=False, rescale=True),
        _spec("breadcrumbs", "outliers", False, normalize=False, rescale=False),
        _spec("breadcrumbs_ties", "outliers", True, normalize=False, rescale=False),
        _spec("della", "della", True, normalize=True, rescale=True),
        _spec("della_linear", "della", False, normalize=False, rescale=True),
        MethodSpec(
            "consensus",
            consensus,
            {
                "weight": _WEIGHT,
                "lambda": _LAMBDA,
                "k": Param(int, 2, bounds=POSITIVE_INT),
                "mask_lambda": Param(float, 0.4, per_input=True, bounds=NON_NEGATIVE),
            },
        ),
    )
}


def get_method(name: str) -> MethodSpec:
    """The method registered as ``name``; ``UsageError`` listing the known ones otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise UsageError(f"unknown merge method {name!r}; known: {', '.join(sorted(METHODS))}") from None
