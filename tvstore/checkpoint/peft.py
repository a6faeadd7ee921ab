"""PEFT LoRA adapter directories: read the factors, map them onto the base's tensors.

An adapter (``adapter_config.json`` + ``adapter_model.safetensors``) is a task
vector already in low-rank form, delta_W = B @ A * scale. It is stored
exactly as its factors, never expanded. Scale follows PEFT: ``lora_alpha / r``
(``/ sqrt(r)`` with rslora), with per-module ``rank_pattern``/``alpha_pattern``
overrides; ``fan_in_fan_out`` (GPT-2 style Conv1D) stores W transposed.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tvstore.checkpoint.reader import Checkpoint, open_checkpoint
from tvstore.errors import InvalidCheckpointError

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PREFIX = "base_model.model."  # where PEFT saves a wrapped model's keys
_LORA = re.compile(r"^(?P<module>.+)\.(?P<kind>lora_A|lora_B|lora_embedding_A|lora_embedding_B)(?:\.(?P<adapter>[^.]+))?(?:\.weight)?$")


def is_adapter_dir(path: Path) -> bool:
    return path.is_dir() and (path / CONFIG_NAME).is_file()


@dataclass(frozen=True)
class LoraModule:
    """One adapted base tensor: delta = b @ a * scale (already oriented like the base weight)."""

    target: str  # base tensor name
    b: torch.Tensor
    a: torch.Tensor
    scale: float


@dataclass(frozen=True)
class Adapter:
    path: Path
    config: dict[str, Any]
    modules: list[LoraModule]
    others: dict[str, torch.Tensor]  # modules_to_save and the like: whole tensors


def _pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    for key, value in patterns.items():
        if re.fullmatch(rf"(.*\.)?{key}", module):
            return value
    return default


def _scale(config: dict[str, Any], module: str) -> tuple[int, float]:
    r = int(_pattern_value(config.get("rank_pattern") or {}, module, config["r"]))
    alpha = float(_pattern_value(config.get("alpha_pattern") or {}, module, config["lora_alpha"]))
    return r, alpha / (math.sqrt(r) if config.get("use_rslora") else r)


def _target(module: str, names: set[str]) -> str:
    """The base tensor a PEFT module path adapts (prefixes differ between model classes)."""
    parts = module.split(".")
    for start in range(len(parts)):
        candidate = ".".join(parts[start:]) + ".weight"
        if candidate in names:
            return candidate
    raise InvalidCheckpointError(f"LoRA module {module!r} matches no tensor of the base (looked for '{module}.weight')")


def _strip(key: str) -> str:
    return key[len(PREFIX):] if key.startswith(PREFIX) else key


def read_adapter(path: Path, base_names: set[str]) -> Adapter:
    try:
        config = json.loads((path / CONFIG_NAME).read_text())
    except (OSError, ValueError) as exc:
        raise InvalidCheckpointError(f"{path / CONFIG_NAME}: not a readable adapter config ({exc})") from None
    if config.get("peft_type", "LORA") != "LORA":
        raise InvalidCheckpointError(f"{path}: only LoRA adapters are supported, this is {config.get('peft_type')}")
    if config.get("use_dora"):
        raise InvalidCheckpointError(f"{path}: DoRA adapters are not low-rank deltas; merge it first and push the result")
    if not (path / WEIGHTS_NAME).is_file():
        raise InvalidCheckpointError(f"{path}: {WEIGHTS_NAME} is missing (pickled adapter_model.bin is refused)")
    with open_checkpoint(path / WEIGHTS_NAME) as ckpt:
        return Adapter(path, config, *_collect(ckpt, config, base_names))


def _collect(ckpt: Checkpoint, config: dict[str, Any], base_names: set[str]) -> tuple[list[LoraModule], dict[str, torch.Tensor]]:
    factors: dict[str, dict[str, torch.Tensor]] = {}
    others = {}
    for key in ckpt.names():
        m = _LORA.match(_strip(key))
        if m is None:
            if "lora_" in key or "magnitude" in key:
                raise InvalidCheckpointError(f"{ckpt.path}: adapter tensor {key!r} is not a LoRA factor tvstore understands")
            others[_strip(key).replace(".modules_to_save.default", "")] = ckpt.get(key)
            continue
        factors.setdefault(m["module"], {})[m["kind"]] = ckpt.get(key)
    modules = []
    for module, parts in sorted(factors.items()):
        modules.append(_module(module, parts, config, base_names))
    return modules, others


def _module(module: str, parts: dict[str, torch.Tensor], config: dict[str, Any], base_names: set[str]) -> LoraModule:
    target = _target(module, base_names)
    r, scale = _scale(config, module)
    if "lora_embedding_A" in parts:  # Embedding: A is (r x vocab), B is (dim x r); W is (vocab x dim)
        return LoraModule(target, parts["lora_embedding_A"].T, parts["lora_embedding_B"].T, scale)
    if set(parts) != {"lora_A", "lora_B"}:
        raise InvalidCheckpointError(f"LoRA module {module!r} lacks {sorted({'lora_A', 'lora_B'} - set(parts))}")
    a, b = parts["lora_A"], parts["lora_B"]
    if a.ndim != 2 or b.ndim != 2:
        raise InvalidCheckpointError(f"LoRA module {module!r}: only Linear/Conv1D/Embedding factors are supported")
    if a.shape[0] != r:
        raise InvalidCheckpointError(f"LoRA module {module!r}: lora_A has rank {a.shape[0]}, the config says r={r}")
    if config.get("fan_in_fan_out"):
        return LoraModule(target, a.T, b.T, scale)
    return LoraModule(target, b, a, scale)
