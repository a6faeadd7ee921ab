"""The classifier the tasks train (encoder + linear head) and its checkpoint format.

A fine-tune is stored as a Hugging Face directory whose ``model.safetensors``
holds exactly the base model's tensor names (so ``tau = ft - base`` lines up
name by name in the registry) plus the head as *extra* tensors
``classifier.weight`` / ``classifier.bias``; the base's config and tokenizer
files are copied next to it so ``transformers`` and the registry both read it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from tvstore.checkpoint import open_checkpoint

os.environ.setdefault("HF_HUB_OFFLINE", "1")

HEAD_WEIGHT = "classifier.weight"
HEAD_BIAS = "classifier.bias"
HEAD_NAMES = (HEAD_WEIGHT, HEAD_BIAS)
WEIGHTS_FILE = "model.safetensors"


def classify(encoder: PreTrainedModel, head: nn.Linear, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Logits: encoder, mean pooling over real (unpadded) tokens, linear head.

    A free function so that any encoder (fine-tuned, rebuilt, merged) can be
    paired with any task's head without building a new module.
    """
    hidden = encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
    return head(pooled)


class Classifier(nn.Module):
    """Encoder (BERT, MPNet) plus a linear head on mean-pooled token embeddings (what fine-tuning trains)."""

    def __init__(self, encoder: PreTrainedModel, num_labels: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.classifier = nn.Linear(encoder.config.hidden_size, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return classify(self.encoder, self.classifier, input_ids, attention_mask)


def load_tokenizer(model_dir: Path) -> PreTrainedTokenizerBase:
    """The tokenizer shipped next to a checkpoint, never from a hub."""
    return AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)


def base_tensor_names(base_dir: Path) -> list[str]:
    """The tensor names of the base checkpoint (the names a fine-tune must reuse)."""
    with open_checkpoint(base_dir) as ckpt:
        return ckpt.names()


def load_config(model_dir: Path) -> PretrainedConfig:
    """The checkpoint's config (BERT, MPNet, ...), read from its directory only."""
    return AutoConfig.from_pretrained(str(model_dir), local_files_only=True)


def encoder_from_tensors(config: PretrainedConfig, tensors: dict[str, torch.Tensor]) -> PreTrainedModel:
    """The bare encoder of ``config``'s family (``BertModel``, ``MPNetModel``) with weights ``tensors``.

    Loaded by hand instead of ``from_pretrained`` so that a sharded directory
    written by the registry, a single file, or an in-memory merge all go the
    same way, and so that a missing encoder tensor is an error, not a silent
    random initialisation.
    """
    model_class = AutoModel._model_mapping[type(config)]  # the family's bare encoder class
    model = model_class(config, add_pooling_layer="pooler.dense.weight" in tensors)
    wanted = model.state_dict()
    state = {name: tensors[name] for name in wanted if name in tensors}
    missing = sorted(set(wanted) - set(state))
    if missing:
        raise KeyError(f"checkpoint lacks encoder tensors: {missing[:5]}{'...' if len(missing) > 5 else ''}")
    model.load_state_dict(state, strict=True)
    return model.eval()


def read_tensors(model_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint directory (single file or sharded)."""
    with open_checkpoint(model_dir) as ckpt:
        return {name: ckpt.get(name) for name in ckpt.names()}


def load_encoder(model_dir: Path) -> PreTrainedModel:
    """The encoder stored in a checkpoint directory."""
    return encoder_from_tensors(load_config(model_dir), read_tensors(model_dir))


def load_head(model_dir: Path) -> nn.Linear:
    """The linear head stored as extra tensors in a checkpoint directory."""
    with open_checkpoint(model_dir) as ckpt:
        weight, bias = ckpt.get(HEAD_WEIGHT), ckpt.get(HEAD_BIAS)
    head = nn.Linear(weight.shape[1], weight.shape[0])
    head.load_state_dict({"weight": weight.float(), "bias": bias.float()})
    return head.eval()


def side_files(model_dir: Path) -> list[Path]:
    """Config and tokenizer files of a model directory (everything but weights)."""
    return [
        p
        for p in sorted(model_dir.iterdir())
        if p.is_file() and not p.name.endswith(".safetensors") and not p.name.endswith(".index.json")
    ]


def save_classifier(model: Classifier, base_dir: Path, out_dir: Path) -> Path:
    """Write ``model`` as a checkpoint directory named exactly like the base.

    Base tensors the model does not own (buffers such as ``position_ids``, or
    the unused pooler) are copied from the base unchanged, so their delta is
    exactly zero and the tensor manifests of base and fine-tune match.
    """
    base = load_file(str(base_dir / WEIGHTS_FILE))
    own = model.encoder.state_dict()
    tensors = {name: own.get(name, tensor).detach().to(tensor.dtype).contiguous().clone() for name, tensor in base.items()}
    tensors[HEAD_WEIGHT] = model.classifier.weight.detach().contiguous().clone()
    tensors[HEAD_BIAS] = model.classifier.bias.detach().contiguous().clone()
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_dir / WEIGHTS_FILE), metadata={"format": "pt"})
    for path in side_files(base_dir):
        shutil.copy2(path, out_dir / path.name)
    return out_dir
