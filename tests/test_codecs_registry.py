"""Every codec through push and pull, auto choice, per-tensor rules, and packs (RTVQ, TALL, EMR),
on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tvstore.codecs import parse_codec_spec
from tvstore.codecs.emr import emr_parts
from tvstore.codecs.tall import multitask_vector, tall_masks
from tvstore.errors import TvstoreError
from tvstore.tensors.metrics import ErrorStats

SPECS = [
    "lossless",
    "quant:bits=8",
    "quant:bits=4,granularity=channel",
    "quant:bits=2,granularity=group,group_size=64",
    "sparse:density=0.1,values=fp32",
    "dare:p=0.5,seed=3",
    "ternary:density=0.2",
    "lowrank:rank=4",
]


def exact_taus(tiny, task: str) -> dict[str, torch.Tensor]:
    base, ft = tiny.tensors(tiny.base), tiny.tensors(tiny.finetunes[task])
    return {k: ft[k] - base[k] for k in base}


@pytest.mark.parametrize("spec", SPECS)
def test_each_codec_round_trips_through_the_registry(registry, tiny, tmp_path: Path, spec: str) -> None:
    registry.add_base("bert", tiny.base)
    info = registry.push("alpha", tiny.finetunes["alpha"], base="bert", codec=spec)
    codec = parse_codec_spec(spec)
    registry.pull("alpha", tmp_path / "tau.safetensors")
    pulled = load_file(tmp_path / "tau.safetensors")
    total = ErrorStats()
    for name, tau in exact_taus(tiny, "alpha").items():
        want = codec.decode(codec.encode(tau), tuple(tau.shape), tau.dtype)
        assert torch.equal(pulled[name], want), name  # bit-identical to a fresh decode: deterministic
        total += ErrorStats.of(tau, want)
    assert info.rel_l2 == pytest.approx(total.rel_l2, rel=1e-9, abs=1e-12)
    assert info.cosine == pytest.approx(total.cosine, rel=1e-9)
    per_tensor = {t.name: t.codec for t in registry.tensors("alpha")}
    assert all(c == codec.get_config() for c in per_tensor.values())
    if not codec.exact:
        assert info.stored_bytes < info.raw_bytes
    registry.pull_checkpoint("alpha", tmp_path / "ckpt")  # rebuilds from whatever components it has
    again = tmp_path / "ckpt2"
    registry.pull_checkpoint("alpha", again)
    assert load_file(tmp_path / "ckpt" / "model.safetensors").keys() == load_file(again / "model.safetensors").keys()
    for k, v in load_file(tmp_path / "ckpt" / "model.safetensors").items():
        assert torch.equal(v, load_file(again / "model.safetensors")[k])


def test_auto_keeps_every_tensor_under_the_bound(registry, tiny) -> None:
    registry.add_base("bert", tiny.base)
    info = registry.push("alpha", tiny.finetunes["alpha"], base="bert", codec="auto:max_error=0.3")
    tensors = registry.tensors("alpha")
    assert info.codec == {"id": "auto", "max_error": 0.3}
    assert all(t.rel_l2 <= 0.3 + 1e-12 for t in tensors)
    assert len({t.codec["id"] for t in tensors}) >= 2  # it really chooses per tensor
    assert info.stored_bytes < info.raw_bytes / 3


def test_codec_rules_by_tensor_name(cli, tiny) -> None:
    cli("init")
    cli("base", "add", "bert", tiny.base)
    out = cli("push", "alpha", tiny.finetunes["alpha"], "--base", "bert", "--codec", "quant:bits=4",
              "--codec-for", "*LayerNorm*=lossless", "--codec-for", "embeddings.*=quant:bits=8", "--json")
    assert json.loads(out.stdout)["codec"]["rules"][0] == {"match": "*LayerNorm*", "id": "lossless", "level": 1}
    shown = json.loads(cli("show", "alpha", "--tensors", "--json").stdout)["tensors"]
    by_name = {t["name"]: (t["codec"]["id"], t["codec"].get("bits")) for t in shown}
    assert by_name["embeddings.LayerNorm.weight"] == ("lossless", None)
    assert by_name["embeddings.word_embeddings.weight"] == ("quant", 8)
    assert by_name["encoder.layer.0.attention.self.query.weight"] == ("quant", 4)
    assert [t["rel_l2"] for t in shown if "LayerNorm" in t["name"]] == [0.0] * 10
    assert "--max-error goes with --codec auto" in cli("push", "x", tiny.finetunes["alpha"], "--base", "bert",
                                                        "--max-error", "0.1", expect=2).stderr


def _push_group(registry, tiny) -> None:
    registry.add_base("bert", tiny.base)
    for task in ("alpha", "beta", "gamma"):
        registry.push(task, tiny.finetunes[task], base="bert", extra=False)


def test_pack_tall_stores_masks_over_one_shared_vector(registry, tiny, tmp_path: Path) -> None:
    _push_group(registry, tiny)
    before = set(registry.blobs.iter_digests())
    infos = registry.pack(["alpha", "beta", "gamma"], "tall", **{"lambda": 0.4})
    assert [(i.ref, i.kind, i.codec["id"]) for i in infos] == [("alpha@2", "packed", "tall"), ("beta@2", "packed", "tall"), ("gamma@2", "packed", "tall")]
    taus = {t: exact_taus(tiny, t) for t in ("alpha", "beta", "gamma")}
    registry.pull("beta@2", tmp_path / "b.safetensors")
    pulled = load_file(tmp_path / "b.safetensors")
    for name in taus["alpha"]:
        group = [taus[t][name] for t in ("alpha", "beta", "gamma")]
        mtl = multitask_vector(group)
        mask = tall_masks(group, mtl, [0.4] * 3)[1]
        torch.testing.assert_close(pulled[name], torch.where(mask, mtl.to(pulled[name].dtype), 0.0), rtol=0, atol=0)
    sources = [registry.delta_tensors(f"{t}@2") for t in ("alpha", "beta", "gamma")]
    for name in taus["alpha"]:
        comps = [s.components(name) for s in sources]
        assert all(len(c) == 1 and c[0].mask_blob is not None for c in comps)
        assert len({c[0].blob for c in comps}) == 1  # tau_MTL stored once for the group
    new_blobs = set(registry.blobs.iter_digests()) - before
    assert 39 < len(new_blobs) <= 39 + 3 * 39  # shared vectors + masks (identical masks dedupe)
    tree = registry.lineage("beta@2")
    assert [(n["label"], n["relation"]) for n in tree["ancestors"]] == [("beta@1", "compressed-from")]
    assert registry.show("beta@1").version == 1  # old versions stay


def test_pack_emr_rebuilds_rescaled_masked_unified_vector(registry, tiny, tmp_path: Path) -> None:
    _push_group(registry, tiny)
    registry.pack(["alpha", "beta", "gamma"], "emr")
    registry.pull_checkpoint("gamma", tmp_path / "ckpt")
    rebuilt = load_file(tmp_path / "ckpt" / "model.safetensors")
    base = tiny.tensors(tiny.base)
    name = "encoder.layer.1.output.dense.weight"
    group = [exact_taus(tiny, t)[name] for t in ("alpha", "beta", "gamma")]
    uni, masks, _ = emr_parts(group)
    lam = float(group[2].abs().sum() / (masks[2] * uni).abs().sum())
    torch.testing.assert_close(rebuilt[name], base[name] + lam * torch.where(masks[2], uni, 0.0), rtol=1e-5, atol=1e-7)


def test_pack_rtvq_under_a_bit_budget(registry, tiny, cli) -> None:
    """The tiny model's tensors are a few hundred entries, so headers make bits dear: budget 14."""
    _push_group(registry, tiny)
    out = cli("pack", "alpha", "beta", "gamma", "--codec", "rtvq", "--bits", "14", "--json")
    infos = json.loads(out.stdout)
    assert [i["ref"] for i in infos] == ["alpha@2", "beta@2", "gamma@2"]
    stored_bits = 8 * sum(i["stored_bytes"] for i in infos) / sum(i["num_params"] for i in infos)
    assert stored_bits <= 14 + 0.01  # amortized shared base + own offsets, within the budget
    for info in infos:
        assert info["codec"] == {"id": "rtvq", "bits": 14.0}
        assert info["rel_l2"] < 0.3
    tensors = registry.tensors("alpha@2")
    assert all(t.components == 2 for t in tensors)
    assert {tuple(t.codec["bits"]) for t in tensors} <= {(2, 1), (3, 1), (3, 2), (4, 2), (4, 3), (8, 2), (8, 3), (8, 4), (8, 8)}
    with pytest.raises(TvstoreError, match="a budget of 0.01 bits per parameter per task is below the cheapest"):
        registry.pack(["alpha@1", "beta@1", "gamma@1"], "rtvq", bits=0.01)


def test_pack_refuses_bad_groups(registry, tiny) -> None:
    _push_group(registry, tiny)
    with pytest.raises(TvstoreError, match="pack needs at least two task vectors"):
        registry.pack(["alpha"], "tall")
    with pytest.raises(TvstoreError, match="pack codec must be one of rtvq, tall, emr"):
        registry.pack(["alpha", "beta"], "zip")
    with pytest.raises(TvstoreError, match="pack each task vector once"):
        registry.pack(["alpha@1", "alpha"], "tall")
