"""Model cards: every checkpoint tvstore writes carries README.md and the same facts in its safetensors header."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from huggingface_hub import ModelCard
from safetensors import safe_open

import tvstore

RECIPE = """
method: task_arithmetic
inputs:
  - {ref: alpha, weight: 0.5}
  - {ref: beta, weight: 0.25}
"""


def _front_matter(path: Path) -> dict:
    text = (path / "README.md").read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def _header(path: Path) -> dict[str, str]:
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        return f.metadata()


def test_pulled_checkpoint_card_parses_and_matches_its_header(registry, tiny, tmp_path: Path) -> None:
    base = registry.add_base("bert", tiny.base)
    registry.push("alpha", tiny.finetunes["alpha"], base="bert", codec="quant:bits=4", meta={"task": "sports"})
    info = registry.push("alpha", tiny.finetunes["alpha"], base="bert", codec="quant:bits=8")
    registry.pull_checkpoint("alpha", tmp_path / "out")
    card = ModelCard.load(tmp_path / "out" / "README.md")  # huggingface_hub's own parser
    assert card.data.base_model == "bert"
    assert card.data.library_name == "transformers"
    assert card.data.tags == ["tvstore", "task-vector"]
    text = card.text
    assert "# alpha@2 on bert" in text
    assert f"| base | `bert` ({base.digest}) |" in text
    assert f"| codec | `{json.dumps(info.codec, sort_keys=True)}` |" in text and info.codec["bits"] == 8
    assert f"| rel_l2 | `{info.rel_l2}` |" in text
    assert "- `base bert` (finetuned-from)" in text
    assert text.endswith(f"Written by tvstore {tvstore.__version__}.\n")
    header = _header(tmp_path / "out")
    assert header["tvstore.vector"] == "alpha@2"
    assert header["tvstore.base"] == "bert" and header["tvstore.base_digest"] == base.digest
    assert json.loads(header["tvstore.codec"]) == info.codec
    assert float(header["tvstore.rel_l2"]) == info.rel_l2 and float(header["tvstore.cosine"]) == info.cosine
    assert header["tvstore.kind"] == "finetune"
    assert header["tvstore.tvstore_version"] == tvstore.__version__
    assert json.loads(header["tvstore.lineage"]) == [
        {"label": "base bert", "kind": "base", "relation": "finetuned-from", "children": []}
    ]
    assert "tvstore.recipe" not in header


def test_merge_out_card_carries_the_pinned_recipe(registry, cli, tiny, tmp_path: Path) -> None:
    registry.add_base("bert", tiny.base)
    registry.push("alpha", tiny.finetunes["alpha"], base="bert")
    registry.push("beta", tiny.finetunes["beta"], base="bert")
    registry.push("beta", tiny.finetunes["gamma"], base="bert")
    recipe = tmp_path / "recipe.yml"
    recipe.write_text(RECIPE)
    cli("merge", "--recipe", recipe, "--out", tmp_path / "merged", "--shard-size", "40KB")
    out = tmp_path / "merged"
    assert _front_matter(out) == {"base_model": "bert", "library_name": "transformers",
                                  "tags": ["tvstore", "task-vector", "merge"]}
    text = (out / "README.md").read_text()
    body = text.split("```yaml\n")[1].split("```")[0]
    assert yaml.safe_load(body) == {"method": "task_arithmetic", "inputs": [
        {"ref": "alpha@1", "weight": 0.5}, {"ref": "beta@2", "weight": 0.25}]}
    assert "- `alpha@1` (merged-from x0.5)\n- `beta@2` (merged-from x0.25)" in text
    shards = sorted(out.glob("model-*.safetensors"))
    assert len(shards) > 1
    for shard in shards:  # every shard knows where it came from
        with safe_open(str(shard), "pt") as f:
            meta = f.metadata()
        assert json.loads(meta["tvstore.recipe"])["inputs"][1]["ref"] == "beta@2"
        assert json.loads(meta["tvstore.inputs"]) == ["alpha@1", "beta@2"]
        assert meta["tvstore.method"] == "task_arithmetic" and meta["tvstore.merge"] == "1"


def test_saved_merge_pulled_as_checkpoint_has_recipe_and_lineage(registry, tiny, tmp_path: Path) -> None:
    registry.add_base("bert", tiny.base)
    registry.push("alpha", tiny.finetunes["alpha"], base="bert")
    registry.push("beta", tiny.finetunes["beta"], base="bert")
    registry.save_merge("combo", RECIPE)
    registry.pull_checkpoint("combo", tmp_path / "out")
    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert card.data.tags == ["tvstore", "task-vector", "merge"]
    assert "- `alpha@1` (merged-from x0.5)" in card.text and "ref: beta@1" in card.text
    header = _header(tmp_path / "out")
    assert header["tvstore.kind"] == "merge"
    assert json.loads(header["tvstore.recipe"])["inputs"][0] == {"ref": "alpha@1", "weight": 0.5}
