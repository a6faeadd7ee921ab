"""Tiny real models for tests: a randomly initialised BERT and fine-tunes of it.

The fine-tunes are the base moved by a few steps of real gradient descent on
a toy objective, so their deltas look like training deltas (structured, not
i.i.d. noise). Everything is written with ``save_pretrained``, so the files
are exactly what users push.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


@dataclass
class TinyModels:
    base: Path  # HF directory: config.json + model.safetensors (+ tokenizer-ish side file)
    finetunes: dict[str, Path]  # name -> HF directory
    with_head: Path  # a fine-tune plus a classification head the base lacks

    def tensors(self, path: Path) -> dict[str, torch.Tensor]:
        return load_file(path / "model.safetensors")


def _config():
    from transformers import BertConfig

    return BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48,
        max_position_embeddings=32,
    )


def _train(model, seed: int, steps: int = 5, lr: float = 1e-2) -> None:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    target = torch.randn(32, generator=g)
    for _ in range(steps):
        ids = torch.randint(0, 64, (4, 12), generator=g)
        loss = ((model(input_ids=ids).last_hidden_state.mean(dim=(0, 1)) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def make_tiny_models(root: Path, tasks: tuple[str, ...] = ("alpha", "beta", "gamma")) -> TinyModels:
    from transformers import BertModel

    torch.manual_seed(0)
    base_model = BertModel(_config()).eval()
    base = root / "base"
    base_model.save_pretrained(base)
    (base / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 32}))
    finetunes = {}
    for i, task in enumerate(tasks):
        model = BertModel(_config())
        model.load_state_dict(base_model.state_dict())
        _train(model, seed=100 + i)
        finetunes[task] = root / task
        model.save_pretrained(finetunes[task])
    with_head = root / "with_head"
    with_head.mkdir()
    tensors = load_file(finetunes[tasks[0]] / "model.safetensors")
    tensors["classifier.weight"] = torch.randn(3, 32)
    tensors["classifier.bias"] = torch.randn(3)
    save_file(tensors, with_head / "model.safetensors", metadata={"format": "pt"})
    (with_head / "config.json").write_text((finetunes[tasks[0]] / "config.json").read_text())
    return TinyModels(base, finetunes, with_head)
