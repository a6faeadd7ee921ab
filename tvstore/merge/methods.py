"""Merge methods: pure functions from task-vector tensors to one merged delta.

Every method has the signature ``fn(taus, weights, params, *, name, base)``
and returns the merged *delta* for one tensor (theta = base + delta), so the
streaming engine can run any of them tensor by tensor. ``taus`` is a list of
tensors, or one fp32 tensor stacked along dim 0 that the caller gives away:
methods may overwrite a stacked input, which keeps peak memory near
(inputs + 3) x tensor instead of twice the inputs. ``params`` holds the
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
    fn: MergeFn
    params: Mapping[str, Param] = field(default_factory=dict)
    #: linear mergekit-style methods accept the base itself as an input (a zero tau)
    base_as_input: bool = False


_WEIGHT = Param(float, REQUIRED, per_input=True, bounds=FINITE)
_LAMBDA = Param(float, 1.0, bounds=FINITE)
_SEED = Param(int, 0, bounds=Bounds(int, 0, 2**63 - 1))
_COMMON = {
    "weight": _WEIGHT,
    "lambda": _LAMBDA,
    "normalize": Param(bool, False),
    "int8_mask": Param(bool, False),  # accepted for mergekit files; masks are bool here anyway
}


def _gta(taus: Sequence[torch.Tensor], weights: Sequence[float], params: Mapping[str, Any], *, name: str,
         sparsifier: str | None, consensus: bool) -> torch.Tensor:
    """Generalised task arithmetic, operation for operation as mergekit does it."""
    norm = sp.rescale_norm(params.get("rescale", False))
    owned = isinstance(taus, torch.Tensor) and taus.dtype == torch.float32
    deltas = taus if owned else torch.empty((len(taus), *taus[0].shape), dtype=torch.float32)
    for i in range(len(taus)):
        if sparsifier is not None or not owned:
            deltas[i] = _sparsify(taus[i].float(), sparsifier, params, i, norm, name)
    w = torch.tensor(list(weights), dtype=torch.float32)
    while w.dim() < deltas.dim():
        w.unsqueeze_(-1)
    deltas.mul_(w)
    if consensus:
        mask = sign_consensus(deltas, params.get("consensus", "sum"))
        divisor = torch.zeros(deltas.shape[1:], dtype=torch.float32)
        for i, weight in enumerate(weights):  # = (w * mask).sum(0), one row at a time
            divisor.add_(mask[i], alpha=weight)
        divisor[divisor == 0] = 1
        mixed = deltas.mul_(mask).sum(dim=0)
    else:
        mixed = deltas.sum(dim=0)
        divisor = w.sum(dim=0)
        divisor[divisor.abs() < 1e-8] = 1
    del deltas
    if params.get("normalize", False):
        mixed /= divisor
    if params.get("lambda", 1.0) != 1:
        mixed *= params["lambda"]
    return mixed


def _sparsify(tau: torch.Tensor, how: str | None, params: Mapping[str, Any], i: int, norm: str | None,
              name: str) -> torch.Tensor:
    if how is None:
        return tau
    density = params["density"][i]
    if how == "magnitude":
        return sp.magnitude(tau, density, norm)
    if how == "outliers":
        return sp.magnitude_outliers(tau, density, params["gamma"][i], norm)
    gen = sp.tensor_generator(params.get("seed", 0), name, i)
    if how == "random":
        return sp.bernoulli(tau, density, norm, gen)
    return sp.della_magprune(tau, density, params["epsilon"][i], norm, gen)


def sign_consensus(deltas: torch.Tensor, method: str = "sum") -> torch.Tensor:
    """TIES sign election: bool mask of entries agreeing with the elected sign.

    ``sum`` elects by summed (weighted) mass, as in the TIES paper; ``count``
    by a plain vote. Ties go to +; zero (trimmed) entries never agree.
    """
    sign = deltas.sign()
    votes = deltas.sum(dim=0) if method == "sum" else sign.sum(dim=0)
    majority = (votes >= 0).to(deltas.dtype) * 2 - 1
    return sign == majority


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


def _family(sparsifier: str | None, consensus_: bool) -> MergeFn:
    def fn(taus: Sequence[torch.Tensor], weights: Sequence[float], params: Mapping[str, Any], *, name: str,
           base: torch.Tensor | None = None) -> torch.Tensor:
        return _gta(taus, weights, params, name=name, sparsifier=sparsifier, consensus=consensus_)

    return fn


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
    return MethodSpec(name, _family(sparsifier, consensus_), params, base_as_input)


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
