"""Merged models straight from the registry.

Multi-task merges (task arithmetic, TIES, consensus) are ``Registry.merge``
over the stored vectors' exact refs: a lazy mapping computed one tensor at a
time by the same engine ``tvstore merge`` uses, loaded into one encoder.
TALL masks and EMR are per-task reconstructions from ``Registry.pack``
(``store.pack_set``), rebuilt with ``pull_checkpoint`` by the harness.
The heads never merge (their shapes differ by task; the recipe refuses extra
tensors and only the base's float tensors are read): every task is scored
with its own head, taken from its own stored vector.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from transformers import PretrainedConfig, PreTrainedModel

from benchmarks.eval.model import HEAD_BIAS, HEAD_WEIGHT, encoder_from_tensors
from benchmarks.eval.settings import MergeSetting
from tvstore.registry import Registry


class BaseModelTensors:
    """The base checkpoint held in memory (read once, shared by every merged encoder)."""

    def __init__(self, tensors: dict[str, torch.Tensor], config: PretrainedConfig, float_names: list[str]) -> None:
        self.tensors, self.config, self.float_names = tensors, config, float_names

    def encoder_from_theta(self, theta: Mapping[str, torch.Tensor]) -> PreTrainedModel:
        """An encoder from full weights ``theta``; tensors it lacks come from the base."""
        return encoder_from_tensors(self.config, {name: theta.get(name, base) for name, base in self.tensors.items()})


def head(source: Any) -> torch.nn.Linear:
    """A task's linear head from its stored vector (extra tensors decode to their values)."""
    weight, bias = source.get(HEAD_WEIGHT).float(), source.get(HEAD_BIAS).float()
    layer = torch.nn.Linear(weight.shape[1], weight.shape[0])
    layer.load_state_dict({"weight": weight, "bias": bias})
    return layer.eval()


def merge_recipe(setting: MergeSetting, refs: Mapping[str, str], coefficient: float) -> dict[str, Any]:
    """tvstore's recipe for ``lambda * method({tau_t})`` over exact refs (weight 1 each)."""
    return {
        "method": setting.method,
        "inputs": [{"ref": ref, "weight": 1.0} for ref in refs.values()],
        "params": {**setting.params, "lambda": coefficient},
        "extra_tensors": "refuse",  # heads differ in shape by task; each task keeps its own
    }


def merged_encoder(registry: Registry, base: BaseModelTensors, setting: MergeSetting, refs: Mapping[str, str],
                   coefficient: float) -> PreTrainedModel:
    """One multi-task encoder: ``Registry.merge(recipe)`` read tensor by tensor (base float tensors only)."""
    merged = registry.merge(merge_recipe(setting, refs, coefficient))
    return base.encoder_from_theta({name: merged[name] for name in base.float_names})
