"""LoRA export: any stored vector as a PEFT adapter, checked with real peft on a tiny BERT."""

from __future__ import annotations

import json
import math
from pathlib import Path

import peft
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from test_peft import _lora_dir
from tvstore.errors import UsageError


def _peft_merged(base_dir: Path, adapter: Path) -> dict[str, torch.Tensor]:
    """What a PEFT user gets: the base with the adapter merged in."""
    from transformers import BertModel

    model = peft.PeftModel.from_pretrained(BertModel.from_pretrained(base_dir), adapter)
    return {k: v.clone() for k, v in model.merge_and_unload().state_dict().items()}


def _svd_error(tau: torch.Tensor, rank: int) -> float:
    """Relative L2 error of the best rank-``rank`` approximation (Eckart-Young)."""
    s = torch.linalg.svdvals(tau.double())
    return math.sqrt(float((s[rank:] ** 2).sum() / (s**2).sum()))


def test_export_at_several_ranks_loads_in_peft_within_the_reported_error(registry, tiny, tmp_path: Path) -> None:
    registry.add_base("bert", tiny.base)
    registry.push("alpha", tiny.finetunes["alpha"], base="bert")
    base, ft = tiny.tensors(tiny.base), tiny.tensors(tiny.finetunes["alpha"])
    errors = []
    for rank in (2, 8):
        export = registry.to_lora("alpha", tmp_path / f"r{rank}", rank=rank)
        merged = _peft_merged(tiny.base, tmp_path / f"r{rank}")
        modules = {m.module: m for m in export.modules}
        assert len(modules) == 15  # 12 encoder Linears + 3 embeddings: every 2-D weight the fine-tune changed
        for name, m in modules.items():
            tensor = f"{name}.weight"
            tau = ft[tensor] - base[tensor]
            assert m.rank == min(rank, *tau.shape) and not m.exact
            assert m.rel_l2 == pytest.approx(_svd_error(tau, m.rank), abs=1e-5)
            assert m.kept_energy == pytest.approx(1 - m.rel_l2**2, abs=1e-5)
            got = float((merged[tensor] - base[tensor] - tau).norm() / tau.norm())
            assert got == pytest.approx(m.rel_l2, abs=1e-3), tensor  # base + low-rank tau, up to fp32 rounding of the sum
        for name in export.dropped:  # biases and norms: an adapter cannot hold them, the base's stay
            assert torch.equal(merged[name], base[name]) and base[name].ndim == 1
        assert export.modules_to_save == []
        errors.append(export.rel_l2)
    assert 0 < errors[1] < errors[0] < 1
    config = json.loads((tmp_path / "r8" / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["rank_pattern"]) == (8, 8, {"embeddings\\.token_type_embeddings": 2})
    with safe_open(str(tmp_path / "r8" / "adapter_model.safetensors"), "pt") as f:
        assert f.get_tensor("base_model.model.embeddings.word_embeddings.lora_embedding_A").shape == (8, 64)
        assert f.metadata()["tvstore.vector"] == "alpha@1" and f.metadata()["tvstore.rank"] == "8"
    assert "library_name: peft" in (tmp_path / "r8" / "README.md").read_text()


def test_auto_rank_is_the_smallest_within_max_error(registry, tiny, tmp_path: Path) -> None:
    registry.add_base("bert", tiny.base)
    registry.push("alpha", tiny.finetunes["alpha"], base="bert")
    export = registry.to_lora("alpha", tmp_path / "auto", rank="auto", max_error=0.2, target_modules=["query", "value"])
    base, ft = tiny.tensors(tiny.base), tiny.tensors(tiny.finetunes["alpha"])
    assert sorted(m.module for m in export.modules) == [
        f"encoder.layer.{i}.attention.self.{p}" for i in (0, 1) for p in ("query", "value")
    ]
    for m in export.modules:
        tau = ft[f"{m.module}.weight"] - base[f"{m.module}.weight"]
        assert m.rel_l2 <= 0.2 + 1e-6 and _svd_error(tau, m.rank - 1) > 0.2, m
    assert export.rank == "auto" and len({m.rank for m in export.modules}) > 1
    merged = _peft_merged(tiny.base, tmp_path / "auto")  # per-module ranks go through rank_pattern
    for m in export.modules:
        tensor = f"{m.module}.weight"
        tau = ft[tensor] - base[tensor]
        assert float((merged[tensor] - base[tensor] - tau).norm() / tau.norm()) == pytest.approx(m.rel_l2, abs=1e-3)


def test_lora_in_lora_out_gives_the_same_factors(registry, tiny, tmp_path: Path) -> None:
    from transformers import BertModel

    _lora_dir(tiny.base, tmp_path / "in", BertModel, r=4, lora_alpha=8, target_modules=["query", "value", "word_embeddings"],
              rank_pattern={"layer.1.attention.self.query": 2}, alpha_pattern={"value": 3}, use_rslora=True)
    registry.add_base("bert", tiny.base)
    registry.push("lora", tmp_path / "in", base="bert")
    export = registry.to_lora("lora", tmp_path / "out", rank=4)
    assert all(m.exact for m in export.modules) and len(export.modules) == 5
    ours, theirs = load_file(tmp_path / "out" / "adapter_model.safetensors"), load_file(tmp_path / "in" / "adapter_model.safetensors")
    assert set(ours) == set(theirs)
    for key, value in theirs.items():
        assert torch.equal(ours[key], value), key
    merged_in, merged_out = _peft_merged(tiny.base, tmp_path / "in"), _peft_merged(tiny.base, tmp_path / "out")
    for name, value in merged_in.items():
        torch.testing.assert_close(merged_out[name], value, rtol=1e-6, atol=1e-7, msg=name)
    smaller = registry.to_lora("lora", tmp_path / "r1", rank=1)  # below the stored rank: truncated, not copied
    assert {m.rank for m in smaller.modules} == {1} and not any(m.exact for m in smaller.modules)


def test_head_rides_along_as_modules_to_save_and_pushes_back(registry, tiny, tmp_path: Path) -> None:
    registry.add_base("bert", tiny.base)
    registry.push("head", tiny.with_head, base="bert", extra=True)
    export = registry.to_lora("head", tmp_path / "adapter", rank=32)  # full rank: every module exact up to float error
    assert export.modules_to_save == ["classifier"]
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["modules_to_save"] == ["classifier"]
    tensors = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    head = tiny.tensors(tiny.with_head)
    assert torch.equal(tensors["base_model.model.classifier.weight"], head["classifier.weight"])
    registry.push("again", tmp_path / "adapter", base="bert", extra=True)  # LoRA in: the head comes back exactly
    again = registry.delta_tensors("again")
    assert torch.equal(again.get("classifier.bias"), head["classifier.bias"]) and again.is_extra("classifier.bias")
    original = registry.delta_tensors("head")
    name = "encoder.layer.1.output.dense.weight"
    torch.testing.assert_close(again.get(name), original.get(name), rtol=0, atol=1e-6)


def test_bad_lora_options_are_one_line_errors(registry, cli, tiny, tmp_path: Path) -> None:
    registry.add_base("bert", tiny.base)
    registry.push("alpha", tiny.finetunes["alpha"], base="bert")
    for options, message in [
        ({"rank": "auto"}, "--rank auto needs --max-error (largest relative L2 error per module)"),
        ({"rank": 4, "max_error": 0.1}, "--max-error goes with --rank auto"),
        ({"rank": "auto", "max_error": 1.5}, "--max-error must be in (0, 1), got 1.5"),
        ({"rank": "x"}, "--rank must be a positive integer or 'auto', got 'x'"),
        ({"target_modules": ["nope"]}, "--target-modules 'nope' matches no 2-D weight of alpha@1"),
    ]:
        with pytest.raises(UsageError) as caught:
            registry.to_lora("alpha", tmp_path / "bad", **options)
        assert str(caught.value) == message
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(UsageError, match="already exists and is not an empty directory"):
        registry.to_lora("alpha", tmp_path / "full")
    proc = cli("pull", "alpha", "--lora", "--rank", "0", "--out", tmp_path / "bad", expect=2)
    assert proc.stderr.strip() == "error: --rank must be a positive integer or 'auto', got 0"
    proc = cli("pull", "alpha", "--rank", "4", "--out", tmp_path / "bad.safetensors", expect=2)
    assert proc.stderr.strip() == "error: --rank, --max-error and --target-modules go with --lora"
    assert sorted(p.name for p in tmp_path.iterdir() if "bad" in p.name) == []


def test_cli_reports_each_module(registry, cli, tiny, tmp_path: Path) -> None:
    registry.add_base("bert", tiny.base)
    registry.push("alpha", tiny.finetunes["alpha"], base="bert")
    data = json.loads(cli("pull", "alpha", "--lora", "--rank", "4", "--out", tmp_path / "a", "--json").stdout)
    assert data["vector"] == "alpha@1" and data["rank"] == 4 and len(data["modules"]) == 15
    query = next(m for m in data["modules"] if m["module"] == "encoder.layer.0.attention.self.query")
    assert (query["kind"], query["shape"], query["rank"], query["exact"]) == ("linear", [32, 32], 4, False)
    assert 0 < query["rel_l2"] < 1 and query["kept_energy"] == pytest.approx(1 - query["rel_l2"] ** 2, abs=1e-6)
    text = cli("pull", "alpha", "--lora", "--rank", "2", "--out", tmp_path / "b").stdout
    assert text.startswith(f"wrote LoRA adapter of alpha@1 to {tmp_path / 'b'}: 15 modules, rank 2, rel L2 ")
    assert "encoder.layer.0.attention.self.query" in text and "kept energy" in text


def test_relative_attention_bias_exports_as_an_embedding_peft_applies(registry, tmp_path: Path) -> None:
    """MPNet's (and T5's) ``relative_attention_bias`` is an ``nn.Embedding`` without "embed" in its name.

    Exported as a Linear, PEFT would wrap it as an embedding, find no ``lora_embedding_*`` keys and drop the
    change; exported as an embedding, the merged model carries it.
    """
    from transformers import MPNetConfig, MPNetModel

    config = MPNetConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=40, relative_attention_num_buckets=8)
    torch.manual_seed(0)
    model = MPNetModel(config)
    model.save_pretrained(tmp_path / "base")
    name = "encoder.relative_attention_bias.weight"
    with torch.no_grad():
        model.encoder.relative_attention_bias.weight.add_(torch.randn(8, 1) @ torch.randn(1, 4))  # rank 1
    model.save_pretrained(tmp_path / "ft")
    registry.add_base("mpnet", tmp_path / "base")
    registry.push("ft", tmp_path / "ft", base="mpnet")
    export = registry.to_lora("ft", tmp_path / "lora", rank=2)
    assert {m.module: m.kind for m in export.modules}["encoder.relative_attention_bias"] == "embedding"
    peft_model = peft.PeftModel.from_pretrained(MPNetModel.from_pretrained(tmp_path / "base"), tmp_path / "lora")
    merged = peft_model.merge_and_unload().state_dict()[name]
    want = MPNetModel.from_pretrained(tmp_path / "ft").state_dict()[name]
    assert torch.allclose(merged, want, atol=1e-5)
