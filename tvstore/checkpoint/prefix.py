"""Tensor-name prefixes between a base and its fine-tune.

A classifier fine-tuned with ``AutoModelForSequenceClassification`` saves the
encoder under ``bert.`` (``bert.encoder.layer.0...``) while the base saved
with ``AutoModel`` has no prefix: the same weights under other names. Push
reads such a fine-tune through a view with the prefix stripped (so every
tensor meets its base tensor), records the prefix with the vector, and a
rebuild puts it back, so the rebuilt checkpoint has the fine-tune's own names.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from tvstore.checkpoint.reader import Checkpoint, TensorInfo
from tvstore.errors import InvalidCheckpointError, UsageError

PREFIX_META = "name_prefix"  # the vector's metadata key that records a stripped prefix


def detect_prefix(names: Iterable[str], base_names: Collection[str]) -> str:
    """The dotted prefix (``"bert."``) that, stripped, matches the most base tensors; ``""`` if none beats no prefix."""
    names = list(names)
    direct = sum(n in base_names for n in names)
    counts: Counter[str] = Counter()
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts)):
            if ".".join(parts[i:]) in base_names:
                counts[".".join(parts[:i]) + "."] += 1
    best = counts.most_common(1)
    return best[0][0] if best and best[0][1] > direct else ""


class PrefixStripped:
    """A checkpoint read with ``prefix`` taken off every name whose rest is a base tensor; others keep theirs."""

    def __init__(self, inner: Checkpoint, prefix: str, base_names: Collection[str]) -> None:
        self.inner = inner
        self.path = inner.path
        self._own: dict[str, str] = {}  # name seen by push -> name in the file
        for own in inner.names():
            rest = own[len(prefix):]
            seen = rest if own.startswith(prefix) and rest in base_names else own
            if seen in self._own:
                raise InvalidCheckpointError(
                    f"{self.path}: tensors {self._own[seen]!r} and {own!r} both map to base tensor {seen!r} "
                    f"once the prefix {prefix!r} is stripped"
                )
            self._own[seen] = own

    def names(self) -> list[str]:
        return list(self._own)

    def __contains__(self, name: object) -> bool:
        return name in self._own

    def __len__(self) -> int:
        return len(self._own)

    def info(self, name: str) -> TensorInfo:
        inner = self.inner.info(self._own[name])
        return TensorInfo(name, inner.dtype, inner.shape)

    def infos(self) -> Iterator[TensorInfo]:
        return (self.info(n) for n in self._own)

    def get(self, name: str) -> torch.Tensor:
        return self.inner.get(self._own[name])

    def side_files(self) -> list[Path]:
        return self.inner.side_files()

    def close(self) -> None:
        self.inner.close()


def strip_prefix(ckpt: Checkpoint, base_names: Collection[str], prefix: str | None = None) -> tuple[Any, str]:
    """``(view, prefix)``: ``prefix`` given (``--strip-prefix``) is used as is, ``None`` means detect it."""
    if prefix is None:
        prefix = detect_prefix(ckpt.names(), base_names)
    elif prefix and not any(n.startswith(prefix) for n in ckpt.names()):
        raise UsageError(f"--strip-prefix {prefix!r}: no tensor of {ckpt.path} starts with it")
    return (PrefixStripped(ckpt, prefix, base_names), prefix) if prefix else (ckpt, "")


def with_prefix(meta: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The vector's metadata, recording ``prefix`` when one was stripped."""
    return {**meta, PREFIX_META: prefix} if prefix else meta


def own_names(meta: dict[str, Any], extras: Collection[str]) -> Callable[[str], str]:
    """Rebuild: the fine-tune's own name for each tensor (the base's tensors get the recorded prefix back)."""
    prefix = meta.get(PREFIX_META, "")
    return lambda name: name if name in extras or not prefix else prefix + name
