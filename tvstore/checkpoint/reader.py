"""Lazy, read-only access to checkpoints, one tensor at a time.

Supported: a single ``.safetensors`` file, or a Hugging Face directory with a
``model.safetensors`` file or sharded ``*.safetensors`` plus
``model.safetensors.index.json``. Pickled formats are refused, never loaded:
unpickling an untrusted checkpoint runs arbitrary code.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from tvstore.checkpoint.dtypes import _BY_NAME
from tvstore.errors import InvalidCheckpointError

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_CONVERT_HINT = (
    "pickled checkpoints can run arbitrary code when loaded, so tvstore never unpickles them; "
    "convert it once in a trusted environment, e.g. "
    "`AutoModel.from_pretrained(path).save_pretrained(out, safe_serialization=True)` "
    "or `safetensors.torch.save_file(torch.load(path), 'model.safetensors')`"
)


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


def _refuse_pickle(path: Path) -> None:
    raise InvalidCheckpointError(f"{path}: refusing pickled checkpoint; {_CONVERT_HINT}")


class Checkpoint:
    """A checkpoint's tensors by name; data is read only when asked for."""

    def __init__(self, path: Path, files: dict[str, Path]) -> None:
        self.path = path
        self._file_of = files  # tensor name -> shard file
        self._handles: dict[Path, Any] = {}
        self._infos: dict[str, TensorInfo] = {}
        for shard in dict.fromkeys(files.values()):
            handle = self._open(shard)
            for name in handle.keys():
                if files.get(name) == shard:
                    sl = handle.get_slice(name)
                    dtype = _BY_NAME.get(sl.get_dtype())
                    if dtype is None:
                        raise InvalidCheckpointError(f"{shard}: tensor {name!r} has unsupported dtype {sl.get_dtype()}")
                    self._infos[name] = TensorInfo(name, dtype, tuple(sl.get_shape()))
        missing = sorted(set(files) - set(self._infos))
        if missing:
            raise InvalidCheckpointError(f"{path}: index names tensor {missing[0]!r} but its shard does not hold it")

    def _open(self, shard: Path) -> Any:
        if shard not in self._handles:
            try:
                self._handles[shard] = safe_open(str(shard), framework="pt", device="cpu")
            except (SafetensorError, OSError, ValueError) as exc:
                raise InvalidCheckpointError(f"{shard}: not a readable safetensors file ({exc})") from None
        return self._handles[shard]

    def names(self) -> list[str]:
        return list(self._infos)

    def __contains__(self, name: object) -> bool:
        return name in self._infos

    def __len__(self) -> int:
        return len(self._infos)

    def info(self, name: str) -> TensorInfo:
        return self._infos[name]

    def infos(self) -> Iterator[TensorInfo]:
        return iter(self._infos.values())

    def get(self, name: str) -> torch.Tensor:
        shard = self._file_of[name]
        try:
            return self._open(shard).get_tensor(name)
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise InvalidCheckpointError(f"{shard}: cannot read tensor {name!r} ({exc})") from None

    def side_files(self) -> list[Path]:
        """Non-weight files of a checkpoint directory (config, tokenizer, ...), relative paths."""
        if not self.path.is_dir():
            return []
        weights = {p.resolve() for p in self._file_of.values()}
        out = []
        for root, _dirs, files in os.walk(self.path):
            for fname in files:
                full = Path(root) / fname
                if full.resolve() in weights or fname == INDEX_NAME or fname.startswith("."):
                    continue
                if full.suffix in PICKLE_SUFFIXES or full.suffix == ".safetensors":
                    continue  # other weight files (e.g. an unused pytorch_model.bin) are not side files
                out.append(full.relative_to(self.path))
        return sorted(out)

    def close(self) -> None:
        self._handles.clear()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _single_file(path: Path) -> dict[str, Path]:
    if path.suffix in PICKLE_SUFFIXES:
        _refuse_pickle(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            names = list(handle.keys())
    except (SafetensorError, OSError, ValueError) as exc:
        raise InvalidCheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    return {name: path for name in names}


def _index_files(path: Path) -> dict[str, Path]:
    index_path = path / INDEX_NAME
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidCheckpointError(f"{index_path}: not a valid safetensors index ({exc})") from None
    files = {}
    for name, shard in weight_map.items():
        shard_path = (path / shard).resolve()
        if path.resolve() not in shard_path.parents or not shard_path.is_file():
            raise InvalidCheckpointError(f"{index_path}: shard {shard!r} of tensor {name!r} is missing")
        files[name] = shard_path
    return files


def _directory_files(path: Path) -> dict[str, Path]:
    if (path / INDEX_NAME).is_file():
        return _index_files(path)
    if (path / SINGLE_NAME).is_file():
        return _single_file(path / SINGLE_NAME)
    shards = sorted(path.glob("*.safetensors"))
    if len(shards) == 1:
        return _single_file(shards[0])
    pickled = [p for p in sorted(path.iterdir()) if p.suffix in PICKLE_SUFFIXES]
    if pickled:
        _refuse_pickle(pickled[0])
    if shards:
        raise InvalidCheckpointError(f"{path}: {len(shards)} .safetensors files but no {INDEX_NAME} to say which to use")
    raise InvalidCheckpointError(f"{path}: no safetensors weights found (expected {SINGLE_NAME} or {INDEX_NAME})")


def open_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Open a checkpoint lazily; raises ``InvalidCheckpointError`` with the reason if it cannot."""
    p = Path(path).expanduser()
    if not p.exists():
        raise InvalidCheckpointError(f"{p}: no such file or directory")
    files = _directory_files(p) if p.is_dir() else _single_file(p)
    return Checkpoint(p, files)
