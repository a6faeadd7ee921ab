"""PEFT LoRA adapters pushed as task vectors: stored as factors, rebuilt as peft's merge_and_unload."""

from __future__ import annotations

from pathlib import Path

import peft
import pytest
import torch
from safetensors.torch import load_file


def _lora_dir(base_dir: Path, out: Path, model_cls, **config) -> dict[str, torch.Tensor]:
    """Save a LoRA adapter with random (non-zero) B, and return peft's own merged weights."""
    model = model_cls.from_pretrained(base_dir, local_files_only=True)
    lora = peft.get_peft_model(model, peft.LoraConfig(**config))
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    lora.save_pretrained(out)
    return {k: v.clone() for k, v in lora.merge_and_unload().state_dict().items()}


def test_bert_adapter_with_patterns_and_rslora(registry, tiny, tmp_path: Path) -> None:
    from transformers import BertModel

    merged = _lora_dir(
        tiny.base, tmp_path / "adapter", BertModel, r=4, lora_alpha=8, target_modules=["query", "value"],
        rank_pattern={"layer.1.attention.self.query": 2}, alpha_pattern={"value": 3}, use_rslora=True,
    )
    registry.add_base("bert", tiny.base)
    info = registry.push("lora", tmp_path / "adapter", base="bert")
    assert (info.kind, info.codec, info.num_tensors) == ("lora", {"id": "lowrank", "source": "peft"}, 4)
    adapter_bytes = (tmp_path / "adapter" / "adapter_model.safetensors").stat().st_size
    assert info.stored_bytes < adapter_bytes  # factors, never a dense delta
    ranks = {t.name: t.codec["rank"] for t in registry.tensors("lora")}
    assert ranks["encoder.layer.1.attention.self.query.weight"] == 2
    assert ranks["encoder.layer.0.attention.self.query.weight"] == 4
    registry.pull_checkpoint("lora", tmp_path / "out")
    rebuilt = load_file(tmp_path / "out" / "model.safetensors")
    assert set(rebuilt) == set(merged)
    for name, want in merged.items():
        torch.testing.assert_close(rebuilt[name], want, rtol=1e-5, atol=1e-6, msg=name)
    tree = registry.lineage("lora")
    assert [(n["label"], n["relation"]) for n in tree["ancestors"]] == [("base bert", "finetuned-from")]


def test_gpt2_fan_in_fan_out_adapter(registry, tmp_path: Path) -> None:
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    GPT2Model(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=50, n_positions=16)).save_pretrained(tmp_path / "base")
    merged = _lora_dir(tmp_path / "base", tmp_path / "adapter", GPT2Model, r=2, lora_alpha=4,
                       target_modules=["c_attn"], fan_in_fan_out=True)
    registry.add_base("gpt2", tmp_path / "base")
    registry.push("lora", tmp_path / "adapter", base="gpt2")
    registry.pull_checkpoint("lora", tmp_path / "out")
    rebuilt = load_file(tmp_path / "out" / "model.safetensors")
    for name in ("h.0.attn.c_attn.weight", "h.1.attn.c_attn.weight"):
        torch.testing.assert_close(rebuilt[name], merged[name], rtol=1e-5, atol=1e-6)


def test_adapter_for_another_model_is_refused(registry, tiny, tmp_path: Path) -> None:
    from transformers import GPT2Config, GPT2Model

    GPT2Model(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=50, n_positions=16)).save_pretrained(tmp_path / "g")
    _lora_dir(tmp_path / "g", tmp_path / "adapter", GPT2Model, r=2, target_modules=["c_attn"], fan_in_fan_out=True)
    registry.add_base("bert", tiny.base)
    from tvstore.errors import InvalidCheckpointError

    with pytest.raises(InvalidCheckpointError, match="LoRA module 'h.0.attn.c_attn' matches no tensor of the base"):
        registry.push("lora", tmp_path / "adapter", base="bert")
    assert registry.list() == []
