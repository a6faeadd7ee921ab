"""Group packers (RTVQ, TALL, EMR): stored as components they decode to the papers' formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tvstore.blobs import MemoryBlobStore
from tvstore.codecs.emr import emr_pack
from tvstore.codecs.quant import Quant
from tvstore.codecs.rtvq import Candidate, allocate_bits, rtvq_allocate, rtvq_candidates, rtvq_pack
from tvstore.codecs.tall import tall_pack
from tvstore.codecs.encoded import EncodedComponent
from tvstore.tensors.components import Component, delta
from tvstore.tensors.sources import blob_fetch


def store(encoded: list[EncodedComponent], blobs: MemoryBlobStore) -> list[Component]:
    """What the registry does: put payloads and masks, keep digests."""
    return [
        Component(e.codec, blobs.put(e.payload), e.scale, blobs.put(e.mask) if e.mask is not None else None, e.kind)
        for e in encoded
    ]


def group(t: int = 4, shape: tuple[int, ...] = (24, 16), dtype: torch.dtype = torch.float32, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shared = torch.randn(shape, generator=g) * 1e-3
    return [(shared + torch.randn(shape, generator=g) * 1e-3).to(dtype) for _ in range(t)]


def decoded(packed: list[list[EncodedComponent]], like: torch.Tensor) -> list[torch.Tensor]:
    blobs = MemoryBlobStore()
    return [delta(store(comps, blobs), tuple(like.shape), like.dtype, blob_fetch(blobs, "test")) for comps in packed]


def shared_payloads_identical(packed: list[list[EncodedComponent]], index: int = 0) -> bool:
    return len({comps[index].payload for comps in packed}) == 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("granularity", ["tensor", "channel", "group"])
def test_rtvq_matches_formula(dtype: torch.dtype, granularity: str) -> None:
    taus = group(dtype=dtype)
    packed = rtvq_pack(taus, b_base=3, b_offset=2, granularity=granularity, group_size=32)
    assert shared_payloads_identical(packed, 0) and all(len(c) == 2 for c in packed)
    shape = tuple(taus[0].shape)
    base_codec = Quant(bits=3, granularity=granularity, group_size=32)
    off_codec = Quant(bits=2, granularity=granularity, group_size=32)
    mean = sum(t.to(torch.float32) for t in taus) / len(taus)
    base_hat = base_codec.decode(base_codec.encode(mean.to(dtype)), shape, dtype)
    for tau, got in zip(taus, decoded(packed, taus[0]), strict=True):
        offset = tau.to(torch.float32) - base_hat.to(torch.float32)
        expected = base_hat + off_codec.decode(off_codec.encode(offset), shape, dtype)
        assert torch.equal(got, expected)


def test_rtvq_error_falls_with_bits_and_beats_plain_quant_at_equal_cost() -> None:
    taus = group(t=8, shape=(64, 64))
    errs = {}
    for pair in [(2, 1), (3, 2), (8, 4)]:
        got = decoded(rtvq_pack(taus, *pair), taus[0])
        errs[pair] = sum(float((t - g).norm() ** 2) for t, g in zip(taus, got, strict=True))
    assert errs[(2, 1)] > errs[(3, 2)] > errs[(8, 4)]
    plain = Quant(bits=2)
    plain_err = sum(float((t - plain.decode(plain.encode(t), t.shape, t.dtype)).norm() ** 2) for t in taus)
    assert errs[(3, 2)] < plain_err  # B3O2 costs ~2.4 bits/param/task at T=8


def _naive_best(cands: dict[str, list[Candidate]], sizes: dict[str, int], budget: float) -> float:
    """Exhaustive minimum error under the budget (reference for small cases)."""
    best = float("inf")
    names = sorted(cands)

    def walk(i: int, bits: float, err: float) -> None:
        nonlocal best
        if bits > budget * sum(sizes.values()):
            return
        if i == len(names):
            best = min(best, err)
            return
        for c in cands[names[i]]:
            walk(i + 1, bits + c.bits, err + c.sq_error)

    walk(0, 0.0, 0.0)
    return best


def test_allocate_bits_respects_budget_and_is_near_optimal() -> None:
    rng = np.random.default_rng(0)
    for _ in range(30):
        cands, sizes = {}, {}
        for name in "abcd":
            sizes[name] = int(rng.integers(10, 100))
            bits = np.sort(rng.uniform(1, 8, 4)) * sizes[name]
            errs = np.sort(rng.uniform(0, 10, 4))[::-1]
            cands[name] = [Candidate((i, i), float(b), float(e)) for i, (b, e) in enumerate(zip(bits, errs, strict=True))]
        cheapest = sum(min(c.bits for c in cs) for cs in cands.values()) / sum(sizes.values())
        budget = float(rng.uniform(cheapest, 8))
        chosen = allocate_bits(cands, sizes, budget)
        assert sum(c.bits for c in chosen.values()) <= budget * sum(sizes.values())
        greedy = sum(c.sq_error for c in chosen.values())
        optimum = _naive_best(cands, sizes, budget)
        assert greedy >= optimum - 1e-9
        assert greedy <= optimum + max(c.sq_error for cs in cands.values() for c in cs)  # off by at most one step
    with pytest.raises(ValueError, match="budget"):
        allocate_bits(cands, sizes, 0.01)


def test_rtvq_allocate_spends_bits_where_they_reduce_error() -> None:
    groups = {"loud": group(t=4, shape=(64, 64), seed=1), "quiet": [t * 1e-3 for t in group(t=4, shape=(64, 64), seed=2)]}
    groups["loud"] = [t * 100 for t in groups["loud"]]
    for budget in (2.5, 3.5, 6.0):
        choice = rtvq_allocate(groups, budget)
        cands = {n: {c.choice: c for c in rtvq_candidates(taus)} for n, taus in groups.items()}
        spent = sum(cands[n][choice[n]].bits for n in groups)
        assert spent <= budget * 4 * sum(taus[0].numel() for taus in groups.values())
    low = rtvq_allocate(groups, 2.5)
    assert sum(low["loud"]) >= sum(low["quiet"])  # the loud tensor's error dominates: it gets the bits
    with pytest.raises(ValueError, match="per task is below"):
        rtvq_allocate(groups, 0.5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("lam", [0.2, 0.4, 0.6])
def test_tall_matches_formula(dtype: torch.dtype, lam: float) -> None:
    taus = group(t=5, dtype=dtype)
    packed = tall_pack(taus, lambdas=lam)
    assert shared_payloads_identical(packed) and all(len(c) == 1 and c[0].mask is not None for c in packed)
    mtl = sum(t.to(torch.float32) for t in taus)
    for tau, got in zip(taus, decoded(packed, taus[0]), strict=True):
        mask = tau.to(torch.float32).abs() > lam * (mtl - tau.to(torch.float32)).abs()
        assert torch.equal(got, torch.where(mask, mtl.to(dtype), torch.zeros((), dtype=dtype)))
    assert len({c[0].mask for c in packed}) > 1


def test_tall_with_a_lossy_codec_and_per_task_lambdas() -> None:
    taus = group(t=3)
    packed = tall_pack(taus, lambdas=[0.2, 0.4, 0.6], codec=Quant(bits=8))
    assert shared_payloads_identical(packed) and packed[0][0].codec["id"] == "quant"
    mtl = sum(taus)
    for tau, got, lam in zip(taus, decoded(packed, taus[0]), [0.2, 0.4, 0.6], strict=True):
        mask = tau.abs() > lam * (mtl - tau).abs()
        assert torch.equal(got == 0, ~mask | (got == 0))
        assert float((got - torch.where(mask, mtl, 0.0)).abs().max()) <= float(mtl.abs().max()) / 255 + 1e-9
    with pytest.raises(ValueError, match="lambdas"):
        tall_pack(taus, lambdas=[0.4])
    with pytest.raises(ValueError, match="merge"):
        tall_pack(taus, merge="ties")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_emr_matches_formula(dtype: torch.dtype) -> None:
    taus = group(t=4, dtype=dtype)
    packed = emr_pack(taus)
    assert shared_payloads_identical(packed)
    x = [t.to(torch.float32) for t in taus]
    gamma = torch.sign(sum(x))
    masks = [t * gamma > 0 for t in x]
    uni = gamma * torch.stack([torch.where(m, t.abs(), 0.0) for t, m in zip(x, masks, strict=True)]).max(0).values
    for t, m, comps, got in zip(x, masks, packed, decoded(packed, taus[0]), strict=True):
        lam = float(t.abs().double().sum() / torch.where(m, uni.abs(), 0.0).double().sum())
        assert comps[0].scale == pytest.approx(lam, rel=1e-12)
        expected = torch.where(m, uni.to(dtype), torch.zeros((), dtype=dtype)) * comps[0].scale
        assert torch.equal(got, expected)
        assert float((lam * torch.where(m, uni, 0.0) - got.float()).abs().max()) <= 1e-2 * float(uni.abs().max())


def test_group_packers_validate_inputs() -> None:
    for pack in (rtvq_pack, tall_pack, emr_pack):
        with pytest.raises(ValueError, match="at least one"):
            pack([])
        with pytest.raises(ValueError, match="differ"):
            pack([torch.zeros(3), torch.zeros(4)])


def test_zero_group_is_tiny() -> None:
    taus = [torch.zeros(100, 100)] * 3
    for pack in (rtvq_pack, emr_pack):
        for comps in pack(taus):
            assert all(len(c.payload) <= 8 or c.codec["id"] == "lossless" for c in comps)
            assert all(c.mask is None or len(c.mask) < 64 for c in comps)
