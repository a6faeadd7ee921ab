"""Low-bit codecs of issue 11: error-optimal clipping for quant and RTVQ, sub-bit sign codes with
least-squares scales. Exact measured errors on fixed heavy-tailed deltas, so a regression shows."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tvstore.codecs import get_codec, parse_codec_spec
from tvstore.codecs.quant import Quant, group_view_shape
from tvstore.codecs.rtvq import choose_pairs, rtvq_pack
from tvstore.codecs.lowrank import Lowrank
from tvstore.codecs.sign import Sign
from tvstore.codecs.svdmix import SvdMix
from tvstore.codecs.ternary import Ternary
from tvstore.errors import CodecError
from tvstore.ops.pack_mixed import measure, options
from tvstore.tensors.components import delta_of_encoded


def student_t(shape: tuple[int, ...], seed: int = 0, df: float = 3.0) -> torch.Tensor:
    """A heavy-tailed delta-like tensor: the case min-max ranges waste levels on."""
    return torch.from_numpy(np.random.default_rng(seed).standard_t(df, shape) * 1e-3).float()


def rel_l2(x: torch.Tensor, y: torch.Tensor) -> float:
    return float((x.double() - y.double()).norm() / x.double().norm())


def round_trip(codec, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    payload = codec.encode(x)
    return codec.decode(payload, tuple(x.shape), x.dtype), len(payload)


def test_old_quant_configs_mean_min_max() -> None:
    old = {"id": "quant", "bits": 2, "granularity": "tensor", "group_size": 128}
    assert get_codec(old) == Quant(bits=2, clip="minmax")
    assert parse_codec_spec("quant:bits=4,clip=mse").get_config()["clip"] == "mse"
    with pytest.raises(CodecError, match="clip must be one of minmax, mse, got 'max'"):
        parse_codec_spec("quant:clip=max")


@pytest.mark.parametrize(
    ("bits", "granularity", "minmax_err", "mse_err"),
    [(4, "tensor", 0.8839, 0.3494), (2, "tensor", 0.9820, 0.6151), (2, "group", 0.5905, 0.4771)],
)
def test_mse_clip_cuts_the_error_of_heavy_tails(bits: int, granularity: str, minmax_err: float, mse_err: float) -> None:
    x = student_t((1024, 1024))
    plain, _ = round_trip(Quant(bits=bits, granularity=granularity), x)
    clipped, _ = round_trip(Quant(bits=bits, granularity=granularity, clip="mse"), x)
    assert rel_l2(x, plain) == pytest.approx(minmax_err, abs=5e-4)
    assert rel_l2(x, clipped) == pytest.approx(mse_err, abs=5e-4)


@pytest.mark.parametrize("granularity", ["tensor", "channel", "group"])
def test_mse_clip_is_never_worse_than_min_max_per_group(granularity: str) -> None:
    """Ratio 1 (the min-max range) is on the grid and wins ties, so no group can get worse."""
    x = student_t((48, 96), seed=5, df=2.5)
    groups, width = group_view_shape(tuple(x.shape), granularity, 32)
    errs = []
    for clip in ("minmax", "mse"):
        y, _ = round_trip(Quant(bits=3, granularity=granularity, group_size=32, clip=clip), x)
        errs.append(((x - y).double() ** 2).reshape(groups, width).sum(dim=1))
    assert bool((errs[1] <= errs[0] * (1 + 1e-12)).all())
    assert float(errs[1].sum()) < float(errs[0].sum())


def test_mse_clip_keeps_small_and_constant_tensors_exact_enough() -> None:
    for x in (torch.zeros(5), torch.full((3, 4), 0.5), torch.tensor([[0.25]])):
        y, _ = round_trip(Quant(bits=2, clip="mse"), x)
        torch.testing.assert_close(y, x)


def test_rtvq_with_mse_clip_beats_min_max_at_the_same_widths() -> None:
    taus = [student_t((256, 256), seed=s) + student_t((256, 256), seed=99) for s in range(3)]
    errs = {}
    for clip in ("minmax", "mse"):
        packed = rtvq_pack(taus, 2, 1, clip=clip)
        assert all(c.codec["clip"] == clip for comps in packed for c in comps)
        approx = [sum(get_codec(c.codec).decode(c.payload, (256, 256), torch.float32) for c in comps) for comps in packed]
        errs[clip] = float(np.mean([rel_l2(t, a) for t, a in zip(taus, approx)]))
    assert errs["minmax"] == pytest.approx(0.9667, abs=5e-4)
    assert errs["mse"] == pytest.approx(0.6287, abs=5e-4)


def test_pack_rtvq_clip_through_the_cli(registry, tiny, cli) -> None:
    registry.add_base("bert", tiny.base)
    for task in ("alpha", "beta", "gamma"):
        registry.push(task, tiny.finetunes[task], base="bert")
    infos = {}
    for clip in ("minmax", "mse"):
        out = cli("pack", "alpha@1", "beta@1", "gamma@1", "--codec", f"rtvq:base_bits=2,offset_bits=1,clip={clip}", "--json")
        infos[clip] = json.loads(out.stdout)
        assert all(i["codec"] == {"id": "rtvq", "base_bits": 2, "offset_bits": 1, "clip": clip} for i in infos[clip])
    assert all(m["rel_l2"] < p["rel_l2"] for m, p in zip(infos["mse"], infos["minmax"]))
    bad = cli("pack", "alpha@1", "beta@1", "--codec", "rtvq:clip=max", expect=2)
    assert bad.stderr.strip() == "error: pack rtvq: clip must be one of minmax, mse, got 'max'"


def rowed_student_t(seed: int = 0) -> torch.Tensor:
    """Rows of different size, as in real weight deltas (per-row scales must follow them)."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.standard_t(3, (512, 1024)) * 1e-3 * rng.uniform(0.2, 2, (512, 1))).float()


@pytest.mark.parametrize(
    ("density", "sign_err", "sign_bits", "ternary_err"),
    [(0.05, 0.7208, 0.350, 0.8608), (0.1, 0.6727, 0.589, 0.7958), (1.0, 0.7621, 1.044, 0.9182)],
)
def test_sign_least_squares_scales_beat_compeft_on_the_same_support(
    density: float, sign_err: float, sign_bits: float, ternary_err: float
) -> None:
    x = rowed_student_t()
    y, size = round_trip(Sign(density=density), x)
    t, _ = round_trip(Ternary(density=density), x)
    assert rel_l2(x, y) == pytest.approx(sign_err, abs=5e-4)
    assert 8 * size / x.numel() == pytest.approx(sign_bits, abs=5e-3)
    assert rel_l2(x, t) == pytest.approx(ternary_err, abs=5e-4)


def test_sign_values_are_the_row_mean_magnitude_on_the_support() -> None:
    x = torch.tensor([[0.5, -1.0, 0.0, 0.1], [0.0, 0.0, 0.0, 0.0], [-2.0, 4.0, 0.2, -0.05]])
    y, _ = round_trip(Sign(density=0.5), x)  # keeps the 6 largest |x|: 4, -2, -1, 0.5, 0.2, 0.1
    a0, a2 = float(np.float32(1.6 / 3)), float(np.float32(6.2 / 3))
    want = torch.tensor([[a0, -a0, 0.0, a0], [0.0, 0.0, 0.0, 0.0], [-a2, a2, a2, 0.0]])
    torch.testing.assert_close(y, want, rtol=0, atol=1e-7)
    bitdelta, _ = round_trip(Sign(scales="tensor"), x)  # every entry, one scale: mean |x| (zeros coded +)
    assert torch.equal(bitdelta.abs(), torch.full((3, 4), float(np.float32(x.abs().double().mean()))))
    assert bitdelta[1].tolist() == [bitdelta[1, 0].item()] * 4 and bitdelta[1, 0] > 0


def test_sign_through_the_registry(registry, tiny, tmp_path) -> None:
    registry.add_base("bert", tiny.base)
    info = registry.push("alpha", tiny.finetunes["alpha"], base="bert", codec="sign:density=0.3")
    assert info.codec == {"id": "sign", "density": 0.3, "scales": "row"}
    registry.pull("alpha", tmp_path / "tau.safetensors")
    pulled = load_file(tmp_path / "tau.safetensors")
    base, ft = tiny.tensors(tiny.base), tiny.tensors(tiny.finetunes["alpha"])
    codec = Sign(density=0.3)
    for name, b in base.items():
        tau = ft[name] - b
        assert torch.equal(pulled[name], codec.decode(codec.encode(tau), tuple(tau.shape), tau.dtype)), name


def low_rank_delta(seed: int = 0) -> torch.Tensor:
    """Rank 8 with falling singular values plus noise: the shape Delta-CoMe exploits."""
    g = torch.Generator().manual_seed(seed)
    u, v = torch.randn(384, 8, generator=g), torch.randn(8, 384, generator=g)
    return (u * torch.logspace(0, -1, 8)) @ v * 1e-3 + torch.randn(384, 384, generator=g) * 2e-4


@pytest.mark.parametrize(
    ("codec", "err", "bits"),
    [(SvdMix(rank=8, top=2, top_bits=8, bits=3), 0.2006, 0.199), (SvdMix(rank=8, top=8), 0.1422, 0.338),
     (SvdMix(rank=8, top=0, bits=3), 0.3145, 0.140), (Lowrank(rank=8), 0.1418, 1.153)],
)
def test_svdmix_spends_bits_on_the_top_directions(codec, err: float, bits: float) -> None:
    x = low_rank_delta()
    y, size = round_trip(codec, x)
    assert rel_l2(x, y) == pytest.approx(err, abs=5e-4)
    assert 8 * size / x.numel() == pytest.approx(bits, abs=5e-3)


def test_svdmix_falls_back_for_vectors_and_refuses_bad_params() -> None:
    x = torch.linspace(-1, 1, 50)
    y, _ = round_trip(SvdMix(), x)
    assert torch.equal(y, Quant(bits=8).decode(Quant(bits=8).encode(x), (50,), torch.float32))
    with pytest.raises(CodecError, match="top must be at most rank \\(4\\), got 5"):
        parse_codec_spec("svdmix:rank=4,top=5")
    with pytest.raises(CodecError, match="bits must be an integer in 1..8, got 0"):
        parse_codec_spec("svdmix:bits=0")


def heterogeneous_group(tasks: int = 3) -> dict[str, list[torch.Tensor]]:
    """Three tensors that want different codecs: shared motion, low-rank per task, one task's heavy tail."""
    g = torch.Generator().manual_seed(11)
    common = torch.randn(128, 128, generator=g) * 1e-3
    shared = [common + torch.randn(128, 128, generator=g) * 1e-4 for _ in range(tasks)]
    lowrank = [torch.randn(128, 4, generator=g) @ torch.randn(4, 128, generator=g) * 1e-3 for _ in range(tasks)]
    tails = [student_t((128, 128), seed=20 + t, df=2.0) * (1.0 if t == 0 else 0.05) for t in range(tasks)]
    return {"shared": shared, "lowrank": lowrank, "tails": tails}


def test_mixed_allocation_beats_rtvq_alone_at_sub_bit_budgets() -> None:
    """At 0.5 bit/param/task RTVQ cannot even fit (1-bit offsets); across codecs each tensor gets its own form."""
    groups = heterogeneous_group()
    sizes = {n: taus[0].numel() for n, taus in groups.items()}
    energy = sum(float((t.double() ** 2).sum()) for taus in groups.values() for t in taus)
    packers = options()
    measured = {"mixed": {n: measure(taus, packers) for n, taus in groups.items()}}
    measured["rtvq"] = {n: [c for c in measured["mixed"][n] if str(c.choice).startswith("rtvq")] for n in groups}
    with pytest.raises(ValueError, match="below the cheapest choice"):
        choose_pairs(measured["rtvq"], sizes, 3, 0.5)
    chosen = choose_pairs(measured["mixed"], sizes, 3, 0.5)
    picked = {n: next(c for c in measured["mixed"][n] if c.choice == chosen[n]) for n in groups}
    assert sum(c.bits for c in picked.values()) <= 0.5 * 3 * sum(sizes.values())
    assert chosen == {"shared": "sign:density=0.02", "lowrank": "svdmix:rank=8,top=2",
                      "tails": "rtvq:base_bits=2,offset_bits=1,clip=mse"}
    assert sum(c.sq_error for c in picked.values()) / energy == pytest.approx(0.3892, abs=5e-4)
    errors = {}
    for kind, cands in measured.items():  # at 2 bits both fit: three codec families beat one
        at_two = choose_pairs(cands, sizes, 3, 2.0)
        errors[kind] = sum(next(c for c in cands[n] if c.choice == at_two[n]).sq_error for n in groups) / energy
    assert errors["mixed"] == pytest.approx(0.0238, abs=5e-4) and errors["rtvq"] == pytest.approx(0.1661, abs=5e-4)


def test_pack_mixed_through_the_cli(registry, tiny, cli, tmp_path) -> None:
    registry.add_base("bert", tiny.base)
    for task in ("alpha", "beta", "gamma"):
        registry.push(task, tiny.finetunes[task], base="bert")
    infos = json.loads(cli("pack", "alpha", "beta", "gamma", "--codec", "mixed", "--bits", "14", "--json").stdout)
    assert [i["codec"] for i in infos] == [{"id": "mixed", "bits": 14.0}] * 3
    stored_bits = 8 * sum(i["stored_bytes"] for i in infos) / sum(i["num_params"] for i in infos)
    assert stored_bits <= 14 + 0.01
    base, fts = tiny.tensors(tiny.base), {t: tiny.tensors(tiny.finetunes[t]) for t in ("alpha", "beta", "gamma")}
    packers = options()
    choices = {t.name: t.codec["choice"] for t in registry.tensors("alpha@2") if t.role == "delta"}
    assert set(choices.values()) <= set(packers) and len(set(choices.values())) >= 2
    registry.pull("beta@2", tmp_path / "beta.safetensors")
    pulled = load_file(tmp_path / "beta.safetensors")
    for name, label in choices.items():
        taus = [fts[t][name] - base[name] for t in ("alpha", "beta", "gamma")]
        want = delta_of_encoded(packers[label](taus)[1], tuple(taus[1].shape), taus[1].dtype)
        assert torch.equal(pulled[name], want), name
    bad = cli("pack", "alpha@1", "beta@1", "--codec", "mixed", expect=2)
    assert bad.stderr.strip() == "error: pack mixed needs a budget: bits=B (bits per parameter per task), e.g. mixed:bits=0.5"
