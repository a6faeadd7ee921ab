"""Merges of classifiers that each have their own head: drop, {from: REF}, --head-from, --per-task; Registry.load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tvstore.checkpoint import open_checkpoint
from tvstore.errors import UsageError

LABELS = {"alpha": 2, "beta": 3, "gamma": 4}  # a different head shape per task: heads can never merge
RECIPE = """
method: task_arithmetic
inputs: [alpha, beta, gamma]
params: {lambda: 0.4}
"""


@pytest.fixture(scope="module")
def classifiers(tiny, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each tiny fine-tune with its own linear head (``classifier.*``, the base lacks it)."""
    root = tmp_path_factory.mktemp("classifiers")
    g = torch.Generator().manual_seed(3)
    out = {}
    for task, labels in LABELS.items():
        tensors = tiny.tensors(tiny.finetunes[task])
        tensors["classifier.weight"] = torch.randn(labels, 32, generator=g)
        tensors["classifier.bias"] = torch.randn(labels, generator=g)
        out[task] = root / task
        out[task].mkdir()
        save_file(tensors, out[task] / "model.safetensors", metadata={"format": "pt"})
    return out


def _push_all(registry, tiny, classifiers: dict[str, Path]) -> None:
    registry.add_base("bert", tiny.base)
    for task, path in classifiers.items():
        registry.push(task, path, base="bert", extra=True)


def _head(path: Path) -> dict[str, torch.Tensor]:
    with open_checkpoint(path) as ckpt:
        return {n: ckpt.get(n) for n in ckpt.names() if n.startswith("classifier.")}


def test_three_classifiers_merge_per_task_from_the_cli(registry, cli, tiny, classifiers, tmp_path: Path) -> None:
    from transformers import BertForSequenceClassification

    _push_all(registry, tiny, classifiers)
    recipe = tmp_path / "recipe.yml"
    recipe.write_text(RECIPE)
    cli("merge", "--recipe", recipe, "--save-as", "multi", "--extra-tensors", "drop")
    assert registry.show("multi").recipe["extra_tensors"] == "drop"
    data = json.loads(cli("pull", "multi", "--checkpoint", "--per-task", "--out", tmp_path / "tasks", "--json").stdout)
    assert data["out"] == [str(tmp_path / "tasks" / t) for t in LABELS]
    merged = registry.merge(RECIPE + "extra_tensors: drop\n")
    encoder = {n: merged[n] for n in merged}
    assert not any(n.startswith("classifier.") for n in encoder)
    ids = torch.arange(10).unsqueeze(0)
    for task, labels in LABELS.items():
        folder = tmp_path / "tasks" / task
        rebuilt = load_file(folder / "model.safetensors")
        head = _head(classifiers[task])
        assert sorted(n for n in rebuilt if n.startswith("classifier.")) == sorted(head)
        assert all(torch.equal(rebuilt[n], value) for n, value in head.items())
        for name, value in encoder.items():
            assert torch.equal(rebuilt[name], value), name
        model = BertForSequenceClassification.from_pretrained(folder, num_labels=labels).eval()
        assert torch.equal(model.classifier.weight, head["classifier.weight"])
        assert model(input_ids=ids).logits.shape == (1, labels)
        assert f"| head_from | `{task}@1` |" in (folder / "README.md").read_text()
    cli("pull", "multi", "--checkpoint", "--head-from", "beta", "--out", tmp_path / "beta")
    assert torch.equal(_head(tmp_path / "beta")["classifier.bias"], _head(classifiers["beta"])["classifier.bias"])
    cli("merge", "--recipe", recipe, "--out", tmp_path / "gamma", "--extra-tensors", "from:gamma")
    assert {n: t.shape for n, t in _head(tmp_path / "gamma").items()} == {
        "classifier.weight": (4, 32), "classifier.bias": (4,)}
    assert "extra_tensors:\n  from: gamma@1" in (tmp_path / "gamma" / "README.md").read_text()


def test_extra_tensor_policies_in_the_recipe(registry, tiny, classifiers) -> None:
    _push_all(registry, tiny, classifiers)
    merged = registry.merge(RECIPE + "extra_tensors: {from: beta}\n")
    assert torch.equal(merged["classifier.weight"], _head(classifiers["beta"])["classifier.weight"])
    assert len(merged) == 39 + 2
    assert len(registry.merge(RECIPE + "extra_tensors: drop\n")) == 39
    with pytest.raises(UsageError) as caught:
        registry.merge("method: task_arithmetic\ninputs: [alpha, beta]\nextra_tensors: {from: gamma}\n")
    assert str(caught.value) == "extra_tensors from gamma: not an input of the merge (inputs: alpha, beta)"
    with pytest.raises(UsageError) as caught:
        registry.merge(RECIPE + "extra_tensors: keep\n")
    assert str(caught.value) == "recipe.extra_tensors: expected one of merge, copy, refuse, drop or {from: REF}, got 'keep'"
    with pytest.raises(UsageError) as caught:
        registry.pull_checkpoint("alpha", "unused", head_from="beta")
    assert str(caught.value) == "--per-task and --head-from apply to a merge saved as its recipe; alpha@1 is stored as deltas"
    with pytest.raises(UsageError) as caught:
        registry.recipe("merge_method: task_arithmetic\nmodels: [{model: alpha}]\n", extra_tensors="drop")
    assert str(caught.value) == "--extra-tensors and --head-from need tvstore's recipe format (mergekit's has no extra_tensors)"
    registry.save_merge("twice", "method: task_arithmetic\ninputs: [alpha, alpha@1]\nextra_tensors: drop\n")
    with pytest.raises(UsageError, match="'alpha' is an input more than once"):
        registry.pull_per_task("twice", "unused")


def _fresh_memory(model: torch.nn.Module) -> torch.nn.Module:
    """The model with every parameter and buffer copied into newly allocated memory.

    transformers 5 maps the safetensors file, so ``from_pretrained`` hands
    back tensors at any 8-byte offset, and the CPU matmul kernels round
    differently on unaligned inputs (logits 1e-7 apart on bit-identical
    weights). Outputs are compared with both models' weights in fresh memory.
    """
    for tensor in [*model.parameters(), *model.buffers()]:
        tensor.data = tensor.data.clone()
    return model


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    assert all(sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa)


def test_registry_load_matches_the_pulled_checkpoint(registry, tiny, classifiers, tmp_path: Path) -> None:
    from transformers import BertForSequenceClassification, BertModel

    _push_all(registry, tiny, classifiers)
    registry.pull_checkpoint("beta", tmp_path / "beta")
    ids = torch.tensor([[1, 5, 9, 12, 3, 0]])
    in_memory = registry.load("beta", BertForSequenceClassification, num_labels=3)
    from_disk = BertForSequenceClassification.from_pretrained(tmp_path / "beta", num_labels=3).eval()
    assert not in_memory.training
    _assert_same_weights(in_memory, from_disk)
    with torch.no_grad():
        got, want = _fresh_memory(in_memory)(input_ids=ids).logits, _fresh_memory(from_disk)(input_ids=ids).logits
        assert torch.equal(got, want)
    encoder = registry.load("beta")  # AutoModel: the base's own architecture
    assert type(encoder) is BertModel
    bare = BertModel.from_pretrained(tmp_path / "beta")
    _assert_same_weights(encoder, bare)
    with torch.no_grad():
        want = _fresh_memory(bare)(input_ids=ids).last_hidden_state
        assert torch.equal(_fresh_memory(encoder)(input_ids=ids).last_hidden_state, want)
