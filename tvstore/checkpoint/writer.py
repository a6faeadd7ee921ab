"""Write tensors as a Hugging Face directory of safetensors shards, as they come.

Tensors are buffered only until a shard is full, then written, so memory is
bounded by the shard size rather than the model. Everything is written into
a hidden staging folder that is renamed into place at the end: an interrupted
write never leaves a directory that looks complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import save_file

from tvstore.checkpoint.reader import INDEX_NAME, SINGLE_NAME
from tvstore.errors import UsageError

DEFAULT_SHARD_BYTES = 5 * 1024**3


def parse_size(text: str) -> int:
    """``"500MB"``, ``"5GB"``, ``"1024"`` to bytes."""
    units = {"KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4, "B": 1}
    t = text.strip().upper()
    for unit, mult in units.items():
        if t.endswith(unit):
            t, factor = t[: -len(unit)], mult
            break
    else:
        factor = 1
    try:
        value = int(float(t) * factor)
    except ValueError:
        raise UsageError(f"bad size {text!r}: use e.g. 500MB or 5GB") from None
    if value <= 0:
        raise UsageError(f"size must be positive, got {text!r}")
    return value


def prepare_output_dir(out: Path) -> Path:
    """Refuse a non-empty target; return a staging folder beside it."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out} already exists and is not an empty directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))


def commit_output_dir(staging: Path, out: Path) -> None:
    if out.exists():
        out.rmdir()
    os.replace(staging, out)


class ShardedWriter:
    """Collect tensors into shards of at most ``max_shard_bytes`` (one tensor may exceed it)."""

    def __init__(self, directory: Path, max_shard_bytes: int = DEFAULT_SHARD_BYTES, metadata: dict[str, str] | None = None) -> None:
        self.directory = directory
        self.max_shard_bytes = max_shard_bytes
        self.metadata = {"format": "pt", **(metadata or {})}
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_bytes = 0
        self._shards: list[list[str]] = []
        self._total = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        if self._pending and self._pending_bytes + size > self.max_shard_bytes:
            self._flush()
        self._pending[name] = tensor.contiguous()
        self._pending_bytes += size
        self._total += size

    def _flush(self) -> None:
        if not self._pending:
            return
        index = len(self._shards)
        save_file(self._pending, str(self.directory / f".shard-{index}.safetensors"), metadata=self.metadata)
        self._shards.append(list(self._pending))
        self._pending, self._pending_bytes = {}, 0

    def finish(self) -> list[Path]:
        """Name the shards as transformers expects and write the index; return the files."""
        self._flush()
        n = len(self._shards)
        if n <= 1:
            if n == 0:
                save_file({}, str(self.directory / ".shard-0.safetensors"), metadata=self.metadata)
            target = self.directory / SINGLE_NAME
            os.replace(self.directory / ".shard-0.safetensors", target)
            return [target]
        files, weight_map = [], {}
        for i, names in enumerate(self._shards):
            final = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
            os.replace(self.directory / f".shard-{i}.safetensors", self.directory / final)
            files.append(self.directory / final)
            weight_map.update({name: final for name in names})
        index = {"metadata": {"total_size": self._total}, "weight_map": weight_map}
        (self.directory / INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        return files


def write_checkpoint_dir(
    out: Path,
    tensors: Iterable[tuple[str, torch.Tensor]],
    side_files: Iterable[tuple[str, bytes]] = (),
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write a complete Hugging Face directory atomically (staging folder, then rename)."""
    staging = prepare_output_dir(out)
    try:
        writer = ShardedWriter(staging, max_shard_bytes, metadata)
        for name, tensor in tensors:
            writer.add(name, tensor)
        writer.finish()
        for rel, data in side_files:
            target = staging / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        commit_output_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out
