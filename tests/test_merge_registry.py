"""Merges from the registry: Python API, CLI, saved merges, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from test_merge_vs_mergekit import FTS, TIES, assert_close, models, run_mergekit  # noqa: F401  (fixture)
from test_registry import assert_bit_equal
from tvstore.checkpoint import open_checkpoint
from tvstore.errors import TvstoreError
from tvstore.merge import METHODS
from tvstore.tensors.sources import BaseSource

ARITHMETIC = """
method: task_arithmetic
inputs:
  - {ref: ft0, weight: 1.0}
  - {ref: ft1, weight: -0.5}
"""

ONE_PARAM = {"density": 0.5, "gamma": 0.05, "epsilon": 0.1, "k": 2, "mask_lambda": 0.4}


@pytest.fixture(scope="module")
def mergekit_ties(models: Path) -> Path:  # noqa: F811
    return run_mergekit(models, TIES, "out-ties-registry")


def _fill(registry, models: Path, codec: str = "lossless") -> None:  # noqa: F811
    registry.add_base("base", models / "base")
    for name in FTS:
        registry.push(name, models / name, base="base", codec=codec)


def test_lazy_merge_is_base_plus_weighted_deltas(registry, models: Path) -> None:  # noqa: F811
    _fill(registry, models)
    merged = registry.merge(ARITHMETIC)
    base, f0, f1 = (open_checkpoint(models / n) for n in ("base", "ft0", "ft1"))
    name = "model.layers.0.mlp.up_proj.weight"
    want = base.get(name) + (f0.get(name) - base.get(name)) - 0.5 * (f1.get(name) - base.get(name))
    torch.testing.assert_close(merged[name], want, rtol=1e-6, atol=1e-7)
    assert len(merged) == len(base.names())


def test_a_merge_reads_each_base_tensor_once_for_all_its_exact_inputs(registry, models: Path, monkeypatch) -> None:  # noqa: F811
    """Exact inputs are stored as XOR bits, whose tau needs the base: the merge hands them the base it read."""
    _fill(registry, models)
    reads: list[str] = []
    read = BaseSource.get
    monkeypatch.setattr(BaseSource, "get", lambda self, name: reads.append(name) or read(self, name))
    name = "model.layers.0.mlp.up_proj.weight"
    value = registry.merge(ARITHMETIC)[name]
    assert reads == [name]
    base, f0, f1 = (open_checkpoint(models / n).get(name) for n in ("base", "ft0", "ft1"))
    torch.testing.assert_close(value, base + (f0 - base) - 0.5 * (f1 - base), rtol=1e-6, atol=1e-7)


def test_cli_ties_matches_mergekit_and_loads(registry, cli, models: Path, mergekit_ties: Path, tmp_path: Path) -> None:  # noqa: F811
    _fill(registry, models)
    recipe = tmp_path / "ties.yml"
    recipe.write_text(TIES)
    cli("merge", "--recipe", recipe, "--out", tmp_path / "merged", "--shard-size", "40KB")
    ours = open_checkpoint(tmp_path / "merged")
    assert len(list((tmp_path / "merged").glob("model-*.safetensors"))) > 1
    assert_close({n: ours.get(n) for n in ours.names()}, mergekit_ties)
    assert (tmp_path / "merged" / "config.json").read_bytes() == (models / "base" / "config.json").read_bytes()
    from transformers import AutoModelForCausalLM

    ids = torch.arange(12).unsqueeze(0)
    with torch.no_grad():
        a = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", local_files_only=True)(input_ids=ids).logits
        b = AutoModelForCausalLM.from_pretrained(mergekit_ties, local_files_only=True)(input_ids=ids).logits
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_save_as_recipe_rebuilds_on_pull_with_lineage(registry, cli, models: Path, tmp_path: Path) -> None:  # noqa: F811
    _fill(registry, models)
    recipe = tmp_path / "r.yml"
    recipe.write_text(ARITHMETIC)
    saved = json.loads(cli("merge", "--recipe", recipe, "--save-as", "combo", "--json").stdout)
    assert (saved["kind"], saved["num_tensors"], saved["stored_bytes"]) == ("merge", 0, 0)
    assert [i["ref"] for i in saved["recipe"]["inputs"]] == ["ft0@1", "ft1@1"]  # pinned
    cli("merge", "--recipe", recipe, "--out", tmp_path / "direct")
    cli("pull", "combo", "--checkpoint", "--out", tmp_path / "pulled")
    assert_bit_equal(load_file(tmp_path / "pulled" / "model.safetensors"), load_file(tmp_path / "direct" / "model.safetensors"))
    tree = json.loads(cli("lineage", "combo", "--json").stdout)
    assert [(n["label"], n["relation"], n["weight"]) for n in tree["ancestors"]] == [
        ("ft0@1", "merged-from", 1.0), ("ft1@1", "merged-from", -0.5)]
    refused = cli("rm", "ft0@1", expect=1)
    assert "ft0@1 is an input of combo@1, a merge stored as its recipe" in refused.stderr
    registry.push("ft0", models / "ft2", base="base")  # a new ft0 version does not change the pinned merge
    cli("pull", "combo", "--checkpoint", "--out", tmp_path / "again")
    assert_bit_equal(load_file(tmp_path / "again" / "model.safetensors"), load_file(tmp_path / "direct" / "model.safetensors"))


def test_save_as_with_codec_stores_the_deltas(registry, models: Path, tmp_path: Path) -> None:  # noqa: F811
    _fill(registry, models)
    info = registry.save_merge("combo", ARITHMETIC, codec="lossless")
    assert info.kind == "merge" and info.num_tensors > 0 and info.stored_bytes > 0
    registry.remove("ft0", all_versions=True)  # allowed: the merge no longer needs its inputs
    registry.pull_checkpoint("combo", tmp_path / "pulled")
    merged = load_file(tmp_path / "pulled" / "model.safetensors")
    registry.push("ft0", models / "ft0", base="base")
    want = dict(registry.merge(ARITHMETIC))  # the same inputs again
    for name, value in want.items():
        torch.testing.assert_close(merged[name], value, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_materializes_from_a_lossy_codec(registry, models: Path, method: str) -> None:  # noqa: F811
    _fill(registry, models, codec="quant:bits=4")
    params = {k: v for k, v in ONE_PARAM.items() if k in METHODS[method].params}
    inputs = [{"ref": n, "weight": 0.5, **{k: v for k, v in params.items() if METHODS[method].params[k].per_input}} for n in FTS]
    top = {k: v for k, v in params.items() if not METHODS[method].params[k].per_input}
    recipe = {"method": method, "inputs": inputs, "params": top}
    first, second = dict(registry.merge(recipe)), dict(registry.merge(recipe))
    base = open_checkpoint(models / "base")
    assert set(first) == set(base.names())
    for name in first:
        assert first[name].shape == base.get(name).shape and torch.isfinite(first[name]).all()
        assert torch.equal(first[name], second[name]), f"{method} is not deterministic on {name}"
    moved = sum(float((first[n] - base.get(n)).abs().sum()) for n in first)
    assert moved > 0


def test_recipe_errors_are_clear(registry, models: Path) -> None:  # noqa: F811
    _fill(registry, models)
    with pytest.raises(TvstoreError, match="no task vector named 'nope'"):
        registry.merge("method: task_arithmetic\ninputs:\n  - {ref: nope, weight: 1}\n")


@pytest.mark.parametrize("codec", ["lossless", "ternary:density=0.3", "sparse:density=0.2", "lowrank:rank=4", "auto:max_error=0.2"])
def test_ties_materializes_from_every_codec(registry, models: Path, codec: str) -> None:  # noqa: F811
    """Merges read vectors through their components, whatever wrote them: the lossy result tracks the exact one."""
    _fill(registry, models, codec=codec)
    recipe = {"method": "ties", "inputs": [{"ref": n, "weight": 0.5, "density": 0.5} for n in FTS]}
    got = dict(registry.merge(recipe))
    base = open_checkpoint(models / "base")
    assert all(torch.isfinite(t).all() for t in got.values())
    name = "model.layers.1.self_attn.q_proj.weight"
    moved = got[name] - base.get(name)
    assert float(moved.abs().sum()) > 0
    mean_tau = sum(open_checkpoint(models / n).get(name) - base.get(name) for n in FTS) / 3
    cos = torch.nn.functional.cosine_similarity(moved.flatten(), mean_tau.flatten(), dim=0)
    assert cos > 0.3  # a TIES merge points where the tasks agree, whatever the codec
