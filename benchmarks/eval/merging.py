"""Merged models from stored vectors: tvstore's merge engine and its group packers.

Multi-task merges (task arithmetic, TIES, consensus) run through
``tvstore.merge.Merger`` over the decoded vectors, one tensor at a time, so
what is measured is the engine the registry's ``merge`` uses.  TALL masks and
EMR are per-task reconstructions: each task gets its own encoder from the
shared vector and its mask, built with the packers in ``tvstore.codecs``.
The heads never merge (their shapes differ by task): every task is scored
with its own head, decoded from the same stored vector set.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from transformers import BertConfig, BertModel

from benchmarks.eval.model import HEAD_BIAS, HEAD_WEIGHT, encoder_from_tensors
from benchmarks.eval.settings import MergeSetting
from benchmarks.eval.store import Unavailable, pack_group
from tvstore.merge import Merger, load_recipe

Sources = Mapping[str, Any]  # task -> tensor source of its tau (names/get)


class BaseModelTensors:
    """The base checkpoint held in memory (read once, shared by every rebuild)."""

    def __init__(self, tensors: dict[str, torch.Tensor], config: BertConfig, float_names: list[str]) -> None:
        self.tensors, self.config, self.float_names = tensors, config, float_names

    # TensorSource protocol, so the merge engine can read the base from memory
    def names(self) -> list[str]:
        return list(self.tensors)

    def info(self, name: str) -> tuple[torch.dtype, tuple[int, ...]]:
        return self.tensors[name].dtype, tuple(self.tensors[name].shape)

    def get(self, name: str) -> torch.Tensor:
        return self.tensors[name]

    def encoder(self, delta: Callable[[str], torch.Tensor]) -> BertModel:
        """base + delta(name) for every float tensor; integer buffers as in the base."""
        return self.encoder_from_theta({name: self.tensors[name] + delta(name).to(self.tensors[name].dtype) for name in self.float_names})

    def encoder_from_theta(self, theta: Mapping[str, torch.Tensor]) -> BertModel:
        """An encoder from full weights ``theta``; tensors it lacks come from the base."""
        return encoder_from_tensors(self.config, {name: theta.get(name, base) for name, base in self.tensors.items()})


def head(source: Any) -> torch.nn.Linear:
    """A task's linear head from its stored vector (extra tensors decode to their values)."""
    weight, bias = source.get(HEAD_WEIGHT).float(), source.get(HEAD_BIAS).float()
    layer = torch.nn.Linear(weight.shape[1], weight.shape[0])
    layer.load_state_dict({"weight": weight, "bias": bias})
    return layer.eval()


def recipe_encoder(base: BaseModelTensors, setting: MergeSetting, sources: Sources, coefficient: float) -> BertModel:
    """One multi-task encoder: ``base + lambda * method({tau_t})`` through the merge engine."""
    tasks = list(sources)
    recipe = load_recipe(
        {
            "method": setting.method,
            "inputs": [{"ref": task, "weight": 1.0} for task in tasks],
            "params": {**setting.params, "lambda": coefficient},
        }
    )
    merger = Merger(recipe, base, [sources[task] for task in tasks])
    return base.encoder_from_theta({name: merger.get(name) for name in base.float_names})


def group_encoders(
    base: BaseModelTensors, setting: MergeSetting, taus: dict[str, dict[str, torch.Tensor]]
) -> dict[str, BertModel] | Unavailable:
    """Per task, base + its TALL/EMR reconstruction from the group's shared vector."""
    params = ",".join(f"{k}={v}" for k, v in setting.params.items())
    spec = f"{setting.method}:{params}" if params else setting.method
    packed = pack_group(spec, taus, base.float_names)
    if isinstance(packed, Unavailable):
        return packed
    return {task: base.encoder(lambda name, t=task: packed.taus[t][name]) for task in taus}


def decoded_taus(sources: Sources, names: list[str]) -> dict[str, dict[str, torch.Tensor]]:
    """Every task's decoded tau (from whichever codec stored it), in fp32."""
    return {task: {name: source.get(name).to(torch.float32) for name in names} for task, source in sources.items()}

