"""A classifier saved with ``AutoModelForSequenceClassification`` (names under ``bert.``) pushes onto a base
saved with ``AutoModel`` (no prefix), and rebuilds with its own names, bit-exact, loadable by transformers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

from tvstore.checkpoint.prefix import detect_prefix


@pytest.fixture(scope="module")
def classifier(tiny, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny base, loaded into a sequence classifier, nudged, and saved as transformers saves it."""
    config = BertConfig.from_pretrained(tiny.base, num_labels=3)
    model = BertForSequenceClassification.from_pretrained(tiny.base, config=config)
    torch.manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 1e-3)
    out = tmp_path_factory.mktemp("cls") / "sst"
    model.save_pretrained(out)
    return out


def test_prefix_is_detected_only_when_it_explains_the_names() -> None:
    base = {"embeddings.w", "encoder.l0.w", "pooler.w"}
    assert detect_prefix(["bert.embeddings.w", "bert.encoder.l0.w", "bert.pooler.w", "classifier.w"], base) == "bert."
    assert detect_prefix(["embeddings.w", "encoder.l0.w", "pooler.w", "x.pooler.w"], base) == ""
    assert detect_prefix(["a.b", "c.d"], base) == ""


def test_classifier_round_trip(cli, registry, tiny, classifier: Path, tmp_path: Path) -> None:
    registry.add_base("bert", tiny.base)
    own = load_file(classifier / "model.safetensors")
    assert "bert.pooler.dense.weight" in own and "pooler.dense.weight" in tiny.tensors(tiny.base)

    pushed = json.loads(cli("push", "sst", classifier, "--base", "bert", "--extra", "--json").stdout)
    assert (pushed["meta"], pushed["num_tensors"]) == ({"name_prefix": "bert."}, len(own))

    cli("pull", "sst", "--checkpoint", "--out", tmp_path / "rebuilt")
    rebuilt = load_file(tmp_path / "rebuilt" / "model.safetensors")
    assert rebuilt.keys() == own.keys()
    assert all(rebuilt[k].dtype == own[k].dtype and torch.equal(rebuilt[k], own[k]) for k in own)
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rebuilt", num_labels=3)
    state = model.state_dict()
    assert all(torch.equal(state[k], own[k]) for k in own)


def test_strip_prefix_forced_or_refused(cli, registry, tiny, classifier: Path) -> None:
    registry.add_base("bert", tiny.base)
    wrong = cli("push", "sst", classifier, "--base", "bert", "--extra", "--strip-prefix", "roberta.", expect=2)
    assert wrong.stderr == f"error: --strip-prefix 'roberta.': no tensor of {classifier} starts with it\n"
    none = cli("push", "sst", classifier, "--base", "bert", "--extra", "--strip-prefix", "", expect=1)
    assert none.stderr.startswith(f"error: {classifier}: tensor 'embeddings.") and none.stderr.count("\n") == 1
    assert "it has 41 tensor(s) the base lacks, e.g. 'bert.embeddings." in none.stderr
    assert registry.list() == []
    forced = json.loads(cli("push", "sst", classifier, "--base", "bert", "--extra", "--strip-prefix", "bert.", "--json").stdout)
    assert forced["meta"] == {"name_prefix": "bert."}
