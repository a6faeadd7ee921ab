"""Getting task vectors into a registry and back out, one codec setting at a time.

Everything goes through the registry, the path users take: per-vector codecs
with ``Registry.push``, group codecs (RTVQ) with ``Registry.pack`` over the
lossless vectors of all tasks (each task gets a new version whose shared
part is stored once), and every rebuild with ``pull_checkpoint``.  A codec
or pack that fails raises: a failure is never a quiet cell in a table.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.eval.settings import CodecSetting
from tvstore.checkpoint import open_checkpoint
from tvstore.ops.info import VectorInfo
from tvstore.registry import Registry

BASE_NAME = "base"  # each run's registry holds one base model (MiniLM, MPNet, a tiny one)


@dataclass
class StoredSet:
    """Every task's vector under one codec setting, and what storing it cost."""

    codec: str
    path: str  # "push" or "pack"
    refs: dict[str, str] = field(default_factory=dict)  # task -> exact registry ref (name@version)
    stored_bytes: dict[str, float] = field(default_factory=dict)  # a packed task's share of the group
    num_params: dict[str, int] = field(default_factory=dict)
    rel_l2: dict[str, float] = field(default_factory=dict)
    cosine: dict[str, float] = field(default_factory=dict)

    def add(self, task: str, info: VectorInfo) -> None:
        self.refs[task] = info.ref
        self.stored_bytes[task] = float(info.stored_bytes)
        self.num_params[task] = int(info.num_params)
        self.rel_l2[task] = float(info.rel_l2 or 0.0)
        self.cosine[task] = float(info.cosine if info.cosine is not None else 1.0)


def slug(spec: str) -> str:
    """A registry-safe name fragment for a codec spec (``quant:bits=4`` -> ``quant_bits-4``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", spec.replace(":", "_").replace("=", "-"))


def open_fresh_registry(home: Path, base_dir: Path) -> Registry:
    """A brand-new registry at ``home`` holding the run's base model as ``base``."""
    shutil.rmtree(home, ignore_errors=True)
    registry = Registry.open(home=home)
    registry.init()
    registry.add_base(BASE_NAME, base_dir)
    return registry


def push_set(registry: Registry, setting: CodecSetting, finetunes: dict[str, Path]) -> StoredSet:
    """Push every task's fine-tune with one per-vector codec."""
    stored = StoredSet(setting.spec, "push")
    for task, ft_dir in finetunes.items():
        info = registry.push(
            f"{task}.{slug(setting.spec)}", ft_dir, base=BASE_NAME, codec=setting.spec, extra=True,
            meta={"task": task, "harness": "benchmarks.eval"},
        )
        stored.add(task, info)
    return stored


def pack_set(registry: Registry, spec: str, refs: dict[str, str], **params: object) -> StoredSet:
    """``Registry.pack`` over ``refs`` (task -> exact ref): one new version per task.

    ``spec`` is a pack spec (``rtvq:base_bits=3,offset_bits=2``, ``tall``,
    ``emr``); ``params`` override its parameters.  Stored bytes are each task's
    share of the group (its own parts plus 1/T of the shared ones), as the
    registry records them; the heads ride along exactly as extra tensors.
    """
    stored = StoredSet(spec, "pack")
    tasks = list(refs)
    infos = registry.pack([refs[t] for t in tasks], spec, **params)
    for task, info in zip(tasks, infos, strict=True):
        stored.add(task, info)
    return stored


def float_names(base_dir: Path) -> list[str]:
    """Base tensors that carry a delta (integer buffers such as position ids do not)."""
    with open_checkpoint(base_dir) as ckpt:
        return [name for name in ckpt.names() if ckpt.info(name).dtype.is_floating_point]
