"""The installed ``tvstore`` command, end to end in subprocesses, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from test_registry import assert_bit_equal


def test_user_journey(cli, tiny, tmp_path: Path) -> None:
    assert "not initialised" in cli("ls", expect=1).stderr or "run `tvstore init`" in cli("ls", expect=1).stderr
    init = json.loads(cli("init", "--json").stdout)
    assert init["revision"] == "0004"
    assert json.loads(cli("db", "current", "--json").stdout) == {
        "current": "0004", "head": "0004", "up_to_date": True, "problem": None
    }
    base = json.loads(cli("base", "add", "bert", tiny.base, "--json").stdout)
    assert base["num_tensors"] == 39 and base["side_files"] == ["config.json", "tokenizer_config.json"]
    pushed = json.loads(cli("push", "alpha", tiny.finetunes["alpha"], "--base", "bert", "--meta", "task=toy", "--meta", "lr=1e-2", "--json").stdout)
    assert (pushed["ref"], pushed["meta"], pushed["rel_l2"]) == ("alpha@1", {"task": "toy", "lr": "1e-2"}, 0.0)
    cli("push", "alpha", tiny.finetunes["beta"], "--base", "bert")
    cli("tag", "alpha@1", "stable")

    listing = json.loads(cli("ls", "--json").stdout)
    assert [(v["ref"], v["tags"]) for v in listing] == [("alpha@2", [])]
    every = json.loads(cli("ls", "--all-versions", "--json").stdout)
    assert [(v["ref"], v["tags"]) for v in every] == [("alpha@1", ["stable"]), ("alpha@2", [])]
    assert "alpha" in cli("ls").stdout

    shown = json.loads(cli("show", "alpha:stable", "--tensors", "--json").stdout)
    assert shown["version"] == 1 and len(shown["tensors"]) == 39
    assert all(t["rel_l2"] == 0.0 and t["codec"]["id"] == "lossless" for t in shown["tensors"])

    cli("pull", "alpha:stable", "--checkpoint", "--out", tmp_path / "rebuilt")
    assert_bit_equal(tiny.tensors(tmp_path / "rebuilt"), tiny.tensors(tiny.finetunes["alpha"]))
    cli("pull", "alpha@2", "--out", tmp_path / "tau.safetensors")
    base_t, beta = tiny.tensors(tiny.base), tiny.tensors(tiny.finetunes["beta"])
    assert_bit_equal(load_file(tmp_path / "tau.safetensors"), {k: beta[k] - base_t[k] for k in base_t})

    lineage = json.loads(cli("lineage", "alpha@1", "--json").stdout)
    assert lineage == {
        "vector": "alpha@1",
        "ancestors": [{"label": "base bert", "kind": "base", "relation": "finetuned-from", "children": []}],
        "descendants": [],
    }
    assert "finetuned-from" in cli("lineage", "alpha").stdout

    assert json.loads(cli("verify", "--json").stdout)["ok"] is True
    assert json.loads(cli("rm", "alpha@1", "--json").stdout) == {"removed": ["alpha@1"]}
    dry = json.loads(cli("gc", "--dry-run", "--grace", "0", "--json").stdout)
    assert dry["swept"] > 0
    done = json.loads(cli("gc", "--grace", "0", "--json").stdout)
    assert done["swept"] == dry["swept"]
    assert json.loads(cli("gc", "--grace", "0", "--json").stdout)["swept"] == 0
    assert json.loads(cli("base", "ls", "--json").stdout)[0]["name"] == "bert"


def test_difference_push_and_lineage_tree(cli, tiny, tmp_path: Path) -> None:
    cli("init")
    cli("base", "add", "bert", tiny.base)
    cli("push", "sft", tiny.finetunes["alpha"], "--base", "bert")
    cli("push", "grpo", tiny.finetunes["beta"], "--base", "bert")
    out = cli("push", "reasoning", "--from", tiny.finetunes["alpha"], "--to", tiny.finetunes["beta"], "--base", "bert", "--json")
    assert json.loads(out.stdout)["kind"] == "difference"
    tree = cli("lineage", "sft").stdout
    assert "reasoning@1" in tree and "difference-of" in tree and "base bert" in tree


def test_extra_head_via_cli(cli, tiny, tmp_path: Path) -> None:
    cli("init")
    cli("base", "add", "bert", tiny.base)
    refused = cli("push", "head", tiny.with_head, "--base", "bert", expect=1)
    assert "classifier.bias" in refused.stderr and "--extra" in refused.stderr
    cli("push", "head", tiny.with_head, "--base", "bert", "--extra")
    cli("pull", "head", "--checkpoint", "--out", tmp_path / "out")
    assert_bit_equal(tiny.tensors(tmp_path / "out"), load_file(tiny.with_head / "model.safetensors"))
    assert torch.equal(load_file(tmp_path / "out" / "model.safetensors")["classifier.bias"],
                       load_file(tiny.with_head / "model.safetensors")["classifier.bias"])
