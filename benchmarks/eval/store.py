"""Getting task vectors into a registry and back out, one codec setting at a time.

Per-vector codecs go through the registry (``push`` then ``pull_checkpoint``):
that is the path users take, so it is the one measured.  Group codecs (RTVQ's
shared base + offsets) have no registry push yet; they are packed with
tvstore's own packers over the exact (lossless) vectors and rebuilt in memory,
and their rows say so (``path``).  A codec this checkout lacks yields
``Unavailable`` instead of an exception.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from benchmarks.eval.model import HEAD_NAMES
from benchmarks.eval.settings import CodecSetting
from tvstore.checkpoint import open_checkpoint
from tvstore.codecs import get_codec
from tvstore.codecs.masks import decode_mask
from tvstore.components import EncodedComponent
from tvstore.metrics import ErrorStats
from tvstore.registry import Registry

BASE_NAME = "minilm"


@dataclass(frozen=True)
class Unavailable:
    """A codec or method this checkout cannot run yet (reported as n/a)."""

    reason: str


@dataclass
class StoredSet:
    """Every task's vector under one codec setting, and what storing it cost."""

    codec: str
    path: str  # "registry" or "packer"
    refs: dict[str, str] = field(default_factory=dict)  # task -> registry ref (registry path)
    taus: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # task -> name -> tau (packer path)
    stored_bytes: dict[str, float] = field(default_factory=dict)
    num_params: dict[str, int] = field(default_factory=dict)
    rel_l2: dict[str, float] = field(default_factory=dict)
    cosine: dict[str, float] = field(default_factory=dict)


class TauSource:
    """A ``TensorSource`` (names/info/get) over in-memory tensors, for the merge engine."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]) -> None:
        self._tensors = tensors

    def names(self) -> list[str]:
        return list(self._tensors)

    def info(self, name: str) -> tuple[torch.dtype, tuple[int, ...]]:
        tensor = self._tensors[name]
        return tensor.dtype, tuple(tensor.shape)

    def get(self, name: str) -> torch.Tensor:
        return self._tensors[name]


def slug(spec: str) -> str:
    """A registry-safe name fragment for a codec spec (``quant:bits=4`` -> ``quant_bits-4``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", spec.replace(":", "_").replace("=", "-"))


def open_fresh_registry(home: Path, base_dir: Path) -> Registry:
    """A brand-new registry at ``home`` holding the base as ``minilm``."""
    shutil.rmtree(home, ignore_errors=True)
    registry = Registry.open(home=home)
    registry.init()
    registry.add_base(BASE_NAME, base_dir)
    return registry


def push_set(registry: Registry, setting: CodecSetting, finetunes: dict[str, Path]) -> StoredSet | Unavailable:
    """Push every task's fine-tune with one per-vector codec."""
    stored = StoredSet(setting.spec, "registry")
    for task, ft_dir in finetunes.items():
        try:
            info = registry.push(
                f"{task}.{slug(setting.spec)}", ft_dir, base=BASE_NAME, codec=setting.spec, extra=True,
                meta={"task": task, "harness": "benchmarks.eval"},
            )
        except Exception as error:  # noqa: BLE001  an unknown codec/parameter is a table cell, not a crash
            return Unavailable(f"{type(error).__name__}: {error}")
        stored.refs[task] = f"{info.name}@{info.version}"
        stored.stored_bytes[task] = float(info.stored_bytes)
        stored.num_params[task] = int(info.num_params)
        stored.rel_l2[task] = float(info.rel_l2 or 0.0)
        stored.cosine[task] = float(info.cosine if info.cosine is not None else 1.0)
    return stored


def float_names(base_dir: Path) -> list[str]:
    """Base tensors that carry a delta (integer buffers such as position ids do not)."""
    with open_checkpoint(base_dir) as ckpt:
        return [name for name in ckpt.names() if ckpt.info(name).dtype.is_floating_point]


def decode_component(component: EncodedComponent, like: torch.Tensor) -> torch.Tensor:
    """``scale * (mask ⊙ decode(payload))``: the formula every stored tensor obeys."""
    shape, dtype = tuple(like.shape), like.dtype
    value = get_codec(component.codec).decode(component.payload, shape, dtype)
    if component.mask is not None:
        value = torch.where(decode_mask(component.mask, shape), value, torch.zeros((), dtype=dtype))
    return value * component.scale if component.scale != 1.0 else value


def packed_bytes(per_task: list[list[EncodedComponent]]) -> int:
    """Bytes stored for one tensor of a group: each distinct payload once (content addressing), every mask."""
    payloads: dict[str, int] = {}
    masks = 0
    for components in per_task:
        for component in components:
            payloads[hashlib.sha256(component.payload).hexdigest()] = len(component.payload)
            masks += len(component.mask or b"")
    return sum(payloads.values()) + masks


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # bare words such as granularity=channel


def parse_params(spec: str) -> dict[str, Any]:
    """``family:key=value,...`` -> keyword arguments for a packer (same syntax as codec specs)."""
    _, _, rest = spec.partition(":")
    pairs = (item.partition("=") for item in filter(None, rest.split(",")))
    return {key.strip(): _value(value.strip()) for key, _, value in pairs}


def packer(family: str):
    """The tvstore group packer for ``family`` (imported lazily: it may not exist yet)."""
    if family == "rtvq":
        from tvstore.codecs.rtvq import rtvq_pack

        return rtvq_pack
    if family == "tall":
        from tvstore.codecs.tall import tall_pack

        return tall_pack
    if family == "emr":
        from tvstore.codecs.emr import emr_pack

        return emr_pack
    raise KeyError(f"no group packer for {family!r}")


def pack_group(spec: str, taus: dict[str, dict[str, torch.Tensor]], names: list[str]) -> StoredSet | Unavailable:
    """Run a group packer tensor by tensor over all tasks; rebuild and measure in memory.

    Extra tensors (the heads) are kept exact and counted at their raw size.
    """
    family = spec.partition(":")[0]
    try:
        pack, params = packer(family), parse_params(spec)
    except Exception as error:  # noqa: BLE001
        return Unavailable(f"{type(error).__name__}: {error}")
    tasks = list(taus)
    stored = StoredSet(spec, "packer", taus={t: {} for t in tasks})
    total_bytes = 0
    stats = {t: ErrorStats() for t in tasks}
    for name in names:
        group = [taus[t][name].to(torch.float32) for t in tasks]
        try:
            per_task = pack(group, **params)
        except Exception as error:  # noqa: BLE001
            return Unavailable(f"{type(error).__name__}: {error}")
        total_bytes += packed_bytes(per_task)
        for task, tau, components in zip(tasks, group, per_task, strict=True):
            rebuilt = sum((decode_component(c, tau) for c in components), torch.zeros_like(tau))
            stored.taus[task][name] = rebuilt
            stats[task] += ErrorStats.of(tau, rebuilt)
    encoder_params = sum(taus[tasks[0]][n].numel() for n in names)
    for task in tasks:
        head = {n: taus[task][n] for n in HEAD_NAMES if n in taus[task]}
        stored.taus[task].update(head)
        head_params = sum(t.numel() for t in head.values())
        stored.stored_bytes[task] = total_bytes / len(tasks) + 4.0 * head_params
        stored.num_params[task] = encoder_params + head_params
        stored.rel_l2[task], stored.cosine[task] = stats[task].rel_l2, stats[task].cosine
    return stored


def exact_taus(registry: Registry, lossless: StoredSet, names: list[str]) -> dict[str, dict[str, torch.Tensor]]:
    """Every task's exact tau (and head) decoded from its lossless push."""
    out = {}
    for task, ref in lossless.refs.items():
        source = registry.delta_tensors(ref)
        wanted = [n for n in (*names, *HEAD_NAMES) if n in source.names()]
        out[task] = {name: source.get(name).to(torch.float32) for name in wanted}
    return out


def sources(registry: Registry, stored: StoredSet) -> dict[str, Any]:
    """Per task a tensor source of its (decoded) tau, whichever path stored it."""
    if stored.path == "registry":
        return {task: registry.delta_tensors(ref) for task, ref in stored.refs.items()}
    return {task: TauSource(taus) for task, taus in stored.taus.items()}
