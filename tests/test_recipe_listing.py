"""A merge saved as its recipe is listed and shown as a recipe with its inputs, not as an empty lossless vector."""

from __future__ import annotations

import json
from pathlib import Path

RECIPE = "method: task_arithmetic\ninputs:\n  - {ref: good, weight: 0.5}\n  - {ref: other, weight: -0.25}\n"


def test_saved_recipe_shows_its_inputs(cli, registry, tiny, tmp_path: Path) -> None:
    registry.add_base("bert", tiny.base)
    registry.push("good", tiny.finetunes["alpha"], base="bert")
    registry.push("other", tiny.finetunes["beta"], base="bert")
    (tmp_path / "r.yml").write_text(RECIPE)
    cli("merge", "--recipe", "r.yml", "--save-as", "blend")

    shown = json.loads(cli("show", "blend", "--json").stdout)
    inputs = [{"ref": "good@1", "weight": 0.5}, {"ref": "other@1", "weight": -0.25}]
    assert (shown["codec"], shown["kind"], shown["rel_l2"], shown["cosine"]) == ({"id": "recipe"}, "merge", None, None)
    assert shown["recipe"] == {"method": "task_arithmetic", "inputs": inputs}
    listed = {v["ref"]: v for v in json.loads(cli("ls", "--json").stdout)}
    assert listed["blend@1"] == shown and listed["good@1"]["codec"]["id"] == "lossless"

    text = cli("show", "blend").stdout.splitlines()
    assert text[0] == "blend@1 (merge of bert): recipe task_arithmetic of good@1 x0.5, other@1 x-0.25, rebuilt on read (stores no tensors)"
    row = next(line for line in cli("ls").stdout.splitlines() if "blend" in line)
    assert [c.strip() for c in row.split("│")[1:-1]] == ["blend", "1", "bert", "recipe", "-", "0 B", "-", "-", "-", ""]
