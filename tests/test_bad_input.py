"""Bad input: one clear line naming the problem, exit 2 (usage) or 1 (failure), registry unchanged."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file


@pytest.fixture
def ready(cli, registry, tiny):
    """A registry holding one base and one vector (set up through the API, probed through the CLI)."""
    registry.add_base("bert", tiny.base)
    registry.push("good", tiny.finetunes["alpha"], base="bert")
    cli.registry = registry
    return cli


def snapshot(cli) -> tuple:
    reg = cli.registry
    return [v.to_dict() for v in reg.list(all_versions=True)], [b.to_dict() for b in reg.bases()]


def modified(tiny, tmp_path: Path, change) -> Path:
    tensors = load_file(tiny.finetunes["alpha"] / "model.safetensors")
    change(tensors)
    out = tmp_path / "bad"
    out.mkdir(exist_ok=True)
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    return out


def _rename(t):
    t["encoder.layer.0.renamed.weight"] = t.pop("encoder.layer.0.output.dense.weight")


def _reshape(t):
    t["pooler.dense.weight"] = t["pooler.dense.weight"][:, :16].clone()


def _dtype(t):
    t["pooler.dense.bias"] = t["pooler.dense.bias"].half()


def _nan(t):
    t["pooler.dense.bias"][3] = float("nan")


def _inf(t):
    t["embeddings.LayerNorm.weight"][0] = float("inf")


CASES = [
    (_rename, "tensor 'encoder.layer.0.output.dense.weight' of base 'bert' is missing; "
              "it has 1 tensor(s) the base lacks, e.g. 'encoder.layer.0.renamed.weight'"),
    (_reshape, "tensor 'pooler.dense.weight' has shape [32, 16], base 'bert' has [32, 32]"),
    (_dtype, "tensor 'pooler.dense.bias' is torch.float16, base 'bert' stores it as torch.float32"),
    (_nan, "tensor 'pooler.dense.bias': the delta has 1 NaN/Inf value(s)"),
    (_inf, "tensor 'embeddings.LayerNorm.weight': the delta has 1 NaN/Inf value(s)"),
]


@pytest.mark.parametrize("change,message", CASES, ids=[c[0].__name__.strip("_") for c in CASES])
def test_bad_finetune_is_refused(ready, tiny, tmp_path: Path, change, message: str) -> None:
    before = snapshot(ready)
    proc = ready("push", "bad", modified(tiny, tmp_path, change), "--base", "bert", expect=1)
    assert message in proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ")
    assert snapshot(ready) == before
    assert ready.registry.verify().ok


def test_missing_tensor_is_named(ready, tiny, tmp_path: Path) -> None:
    bad = modified(tiny, tmp_path, lambda t: t.pop("pooler.dense.bias"))
    proc = ready("push", "bad", bad, "--base", "bert", expect=1)
    assert "tensor 'pooler.dense.bias' of base 'bert' is missing" in proc.stderr


def test_truncated_and_non_safetensors_files(ready, tiny, tmp_path: Path) -> None:
    data = (tiny.finetunes["alpha"] / "model.safetensors").read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    proc = ready("push", "bad", truncated, "--base", "bert", expect=1)
    assert f"{truncated}: not a readable safetensors file" in proc.stderr
    garbage = tmp_path / "notes.safetensors"
    garbage.write_text("this is not a checkpoint")
    assert "not a readable safetensors file" in ready("push", "bad", garbage, "--base", "bert", expect=1).stderr
    missing = ready("push", "bad", tmp_path / "nope", "--base", "bert", expect=1)
    assert "no such file or directory" in missing.stderr


def test_pickled_checkpoints_are_refused_without_loading(ready, tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned"
    evil = tmp_path / "pytorch_model.bin"
    # a pickle that would create a file if anyone unpickled it
    evil.write_bytes(b"cos\nsystem\n(S'touch " + str(sentinel).encode() + b"'\ntR.")
    proc = ready("push", "bad", evil, "--base", "bert", expect=1)
    assert "refusing pickled checkpoint" in proc.stderr and "save_pretrained" in proc.stderr
    folder = tmp_path / "hf"
    folder.mkdir()
    shutil.copy(evil, folder / "pytorch_model.bin")
    assert "refusing pickled checkpoint" in ready("base", "add", "pickled", folder, expect=1).stderr
    assert not sentinel.exists()


def test_unknown_base(ready, tiny) -> None:
    proc = ready("push", "x", tiny.finetunes["alpha"], "--base", "llama", expect=1)
    assert "unknown base model 'llama' (known: bert)" in proc.stderr


@pytest.mark.parametrize("name", ["a/b", "..", "bad\x01name", "sp ace", "back\\slash"])
def test_invalid_names_are_usage_errors(ready, tiny, name: str) -> None:
    before = snapshot(ready)
    proc = ready("push", name, tiny.finetunes["alpha"], "--base", "bert", expect=2)
    assert "invalid task vector name" in proc.stderr
    assert snapshot(ready) == before


def test_pulling_what_does_not_exist(ready, tmp_path: Path) -> None:
    assert "task vector 'good' has no version 9 (latest is 1)" in ready("pull", "good@9", "--out", tmp_path / "x", expect=1).stderr
    assert "no task vector named 'nothing'" in ready("pull", "nothing", "--out", tmp_path / "x", expect=1).stderr
    assert "has no tag 'prod'" in ready("pull", "good:prod", "--out", tmp_path / "x", expect=1).stderr
    assert "versions run from 1 to 2147483647" in ready("pull", "good@0", "--out", tmp_path / "x", expect=2).stderr
    for command in (("show",), ("pull", "--out", tmp_path / "x"), ("rm",), ("tag", "t"), ("lineage",)):
        proc = ready(command[0], "good@9223372036854775808", *command[1:], expect=2)
        assert proc.stderr == "error: invalid reference 'good@9223372036854775808': versions run from 1 to 2147483647\n"
    assert not (tmp_path / "x").exists()


def test_existing_output_is_not_overwritten(ready, tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    proc = ready("pull", "good", "--checkpoint", "--out", target, expect=2)
    assert "already exists" in proc.stderr
    assert [p.name for p in target.iterdir()] == ["keep.txt"]


def test_bad_option_values_are_usage_errors(ready, tiny, tmp_path: Path) -> None:
    assert "unknown codec 'zip'" in ready("push", "x", tiny.finetunes["alpha"], "--base", "bert", "--codec", "zip", expect=2).stderr
    assert "bad --meta 'oops'" in ready("push", "x", tiny.finetunes["alpha"], "--base", "bert", "--meta", "oops", expect=2).stderr
    assert "bad duration 'soon'" in ready("gc", "--grace", "soon", expect=2).stderr
    assert "bad size" in ready("pull", "good", "--checkpoint", "--shard-size", "huge", "--out", tmp_path / "o", expect=2).stderr
