"""Merge method formulas on small hand-written tensors, and DARE/DELLA statistics."""

from __future__ import annotations

import pytest
import torch

from tvstore.errors import UsageError
from tvstore.merge.methods import METHODS, agrees, elected_signs, get_method
from tvstore.merge.sparsify import bernoulli, magnitude, magnitude_outliers, tensor_generator

T = torch.tensor


def merge(method: str, taus, weights, name: str = "w", **params):
    """Call a method with its spec defaults filled in, per-input ones as lists."""
    spec = get_method(method)
    full = {}
    for key, p in spec.params.items():
        if key == "weight":
            continue
        value = params.get(key, p.default)
        full[key] = (value if isinstance(value, list) else [value] * len(taus)) if p.per_input else value
    return spec.fn([T(t) for t in taus], weights, full, name=name, base=None)


def test_task_arithmetic_negation_and_analogy() -> None:
    a, b, c = [1.0, -2.0, 0.5], [0.5, 0.5, 0.5], [0.0, 1.0, -1.0]
    assert torch.equal(merge("task_arithmetic", [a], [-1.0]), T([-1.0, 2.0, -0.5]))
    # tau_C + tau_B - tau_A
    assert torch.allclose(merge("task_arithmetic", [c, b, a], [1.0, 1.0, -1.0]), T([-0.5, 3.5, -1.0]))
    assert torch.allclose(merge("task_arithmetic", [a, b], [1.0, 3.0], normalize=True), T([0.625, -0.125, 0.5]))
    assert torch.allclose(merge("task_arithmetic", [a], [1.0], **{"lambda": 2.0}), T([2.0, -4.0, 1.0]))


def test_ties_trim_elect_disjoint_mean() -> None:
    t1 = [1.0, -2.0, 3.0, 0.1]
    t2 = [2.0, 1.0, -1.0, 0.2]
    t3 = [-4.0, 1.5, 0.5, 0.3]
    # density 0.75 keeps the 3 largest of 4 in each tau:
    #   t1 -> [1, -2, 3, 0]; t2 -> [2, 1, -1, 0]; t3 -> [-4, 1.5, 0.5, 0]
    # summed mass [-1, 0.5, 2.5, 0] -> elected sign [-, +, +, + (tie)]
    # disjoint mean of agreeing entries: [-4, (1+1.5)/2, (3+0.5)/2, 0]
    out = merge("ties", [t1, t2, t3], [1.0, 1.0, 1.0], density=0.75)
    assert torch.allclose(out, T([-4.0, 1.25, 1.75, 0.0]))
    # lambda scales; normalize=false sums agreeing entries instead of averaging
    out = merge("ties", [t1, t2, t3], [1.0, 1.0, 1.0], density=0.75, normalize=False, **{"lambda": 0.5})
    assert torch.allclose(out, T([-2.0, 1.25, 1.75, 0.0]))


def test_ties_weights_enter_the_vote_and_the_divisor() -> None:
    # weighted: 3*[1] vs 1*[-2] -> + wins by mass (3 > 2); divisor = weight of agreeing = 3
    out = merge("ties", [[1.0], [-2.0]], [3.0, 1.0])
    assert torch.allclose(out, T([1.0]))
    # count consensus: one vote each -> tie goes to +
    deltas = T([[1.0, 0.0], [-5.0, 0.0]])
    assert elected_signs(deltas, "count").tolist() == [True, True]
    assert elected_signs(deltas, "sum").tolist() == [False, True]
    assert [agrees(row, elected_signs(deltas, "sum")).tolist() for row in deltas] == [[False, False], [True, False]]


def test_magnitude_prune_and_at_least_one() -> None:
    out = merge("magnitude_prune", [[0.1, -0.5, 0.3, 0.05]], [2.0], density=0.5)
    assert torch.allclose(out, T([0.0, -1.0, 0.6, 0.0]))
    assert magnitude(T([0.1, 0.2, 0.3]), 0.01).tolist() == pytest.approx([0.0, 0.0, 0.3])
    assert torch.equal(magnitude(T([1.0, 2.0]), 0.0), T([0.0, 0.0]))


def test_breadcrumbs_drops_outliers_and_smallest() -> None:
    tau = T([float(i) for i in range(1, 11)])  # magnitudes 1..10
    # gamma 0.1 drops the top 1 (10); density 0.5 keeps the next 5 (5..9)
    out = magnitude_outliers(tau, density=0.5, gamma=0.1)
    assert out.tolist() == [0, 0, 0, 0, 5, 6, 7, 8, 9, 0]
    # density wins over gamma when both cannot hold (mergekit's rule): keep 9, dropping the top one
    assert magnitude_outliers(tau, density=0.9, gamma=0.5).tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]
    out = merge("breadcrumbs", [tau.tolist()], [1.0], density=0.5, gamma=0.1)
    assert out.tolist() == [0, 0, 0, 0, 5, 6, 7, 8, 9, 0]


def test_dare_keep_rate_and_rescale() -> None:
    torch.manual_seed(1)
    tau = torch.randn(200_000)
    for norm in ("inverse", "l1"):
        out = bernoulli(tau, 0.3, norm, tensor_generator(0, "x", 0))
        kept = out != 0
        assert kept.float().mean().item() == pytest.approx(0.3, abs=0.005)
        ratio = (out[kept] / tau[kept])
        if norm == "inverse":
            assert torch.allclose(ratio, torch.full_like(ratio, 1 / 0.3))
        else:  # L1 norm preserved exactly; factor ~ 1/density
            assert out.abs().sum().item() == pytest.approx(tau.abs().sum().item(), rel=1e-4)
            assert ratio[0].item() == pytest.approx(1 / 0.3, rel=0.02)
    no_rescale = bernoulli(tau, 0.3, None, tensor_generator(0, "x", 0))
    assert torch.equal(no_rescale[no_rescale != 0], tau[no_rescale != 0])


def test_dare_seeded_reproducible_and_name_dependent() -> None:
    tau = [[float(i) for i in range(1, 65)]]
    a = merge("dare_linear", tau, [1.0], name="layer.0", density=0.5, seed=7)
    b = merge("dare_linear", tau, [1.0], name="layer.0", density=0.5, seed=7)
    c = merge("dare_linear", tau, [1.0], name="layer.1", density=0.5, seed=7)
    d = merge("dare_linear", tau, [1.0], name="layer.0", density=0.5, seed=8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c) and not torch.equal(a, d)
    # the global RNG is untouched: seeds are per tensor, not per process
    torch.manual_seed(0)
    x = torch.rand(1)
    merge("dare_ties", tau * 2, [1.0, 1.0], density=0.5)
    torch.manual_seed(0)
    assert torch.equal(torch.rand(1), x)


def test_della_keeps_large_magnitudes_more_often() -> None:
    torch.manual_seed(2)
    tau = torch.randn(64, 4096)
    out = merge("della_linear", [tau.tolist()], [1.0], density=0.5, epsilon=0.4, rescale=False)
    kept = out != 0
    assert kept.float().mean().item() == pytest.approx(0.5, abs=0.01)
    order = tau.abs().argsort(dim=1)
    small, large = kept.gather(1, order[:, :400]), kept.gather(1, order[:, -400:])
    # keep probability runs from density - eps = 0.1 (smallest) to density + eps = 0.9 (largest)
    assert small.float().mean().item() == pytest.approx(0.14, abs=0.04)
    assert large.float().mean().item() == pytest.approx(0.86, abs=0.04)
    with pytest.raises(ValueError):
        merge("della", [[1.0, 2.0]], [1.0], density=0.5, epsilon=0.6)


def test_consensus_tall_masks() -> None:
    t1 = [1.0, 0.0, 2.0, -1.0]
    t2 = [1.0, 3.0, -2.0, -1.0]
    # tau_MTL = [2, 3, 0, -2]; |tau_MTL - t1| = [1, 3, 2, 1], |tau_MTL - t2| = [1, 0, 2, 1]
    # mask_lambda 0.5: m1 = [1>0.5, 0>1.5, 2>1, 1>0.5] = [T, F, T, T]; m2 = [T, T, T, T]
    assert merge("consensus", [t1, t2], [1.0, 1.0], k=2, mask_lambda=0.5).tolist() == [2.0, 0.0, 0.0, -2.0]
    assert merge("consensus", [t1, t2], [1.0, 1.0], k=1, mask_lambda=0.5).tolist() == [2.0, 3.0, 0.0, -2.0]
    # per-task lambdas: a strict mask for task 1 removes its votes
    assert merge("consensus", [t1, t2], [1.0, 1.0], k=2, mask_lambda=[5.0, 0.5]).tolist() == [0.0, 0.0, 0.0, 0.0]


def test_registry_by_name() -> None:
    assert {"task_arithmetic", "ties", "dare_linear", "dare_ties", "magnitude_prune", "breadcrumbs", "della",
            "consensus"} <= set(METHODS)
    with pytest.raises(UsageError, match="unknown merge method 'tie'"):
        get_method("tie")
