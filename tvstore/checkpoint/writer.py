"""Write safetensors files and Hugging Face directories one tensor at a time.

Every tensor's dtype and shape is known before its data (from the registry's
metadata), so each file's header is written first and tensor bytes are
streamed after it: memory holds one tensor, never a shard or a model.
Directories are assembled in a hidden staging folder and renamed into place
at the end, so an interrupted write never leaves something that looks
complete.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import torch

from tvstore.checkpoint.dtypes import dtype_name
from tvstore.checkpoint.reader import INDEX_NAME, SINGLE_NAME, TensorInfo
from tvstore.errors import TvstoreError, UsageError
from tvstore.util.atomic import replacing
from tvstore.util.folders import as_if_created, make_folder
from tvstore.util.units import DEFAULT_SHARD_BYTES



class SafetensorsStream:
    """One safetensors file whose tensors are declared up front and written in order."""

    def __init__(self, path: Path, infos: Sequence[TensorInfo], metadata: dict[str, str] | None = None) -> None:
        self.path = path
        self._infos = list(infos)
        self._next = 0
        header: dict[str, object] = {"__metadata__": {"format": "pt", **(metadata or {})}}
        offset = 0
        for info in self._infos:
            header[info.name] = {
                "dtype": dtype_name(info.dtype),
                "shape": list(info.shape),
                "data_offsets": [offset, offset + info.nbytes],
            }
            offset += info.nbytes
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)  # the format aligns tensor data to 8 bytes
        self._file: BinaryIO = open(path, "wb")
        self._file.write(struct.pack("<Q", len(blob)) + blob)

    def write(self, name: str, tensor: torch.Tensor) -> None:
        info = self._infos[self._next]
        if name != info.name or tensor.dtype != info.dtype or tuple(tensor.shape) != info.shape:
            raise TvstoreError(
                f"internal error: expected tensor {info.name} {info.dtype} {info.shape}, "
                f"got {name} {tensor.dtype} {tuple(tensor.shape)}"
            )
        flat = tensor.detach().contiguous().reshape(-1)
        if flat.numel():  # the tensor's own memory goes to the file: no bytes object in between
            self._file.write(memoryview(flat.view(torch.uint8).numpy()))
        self._next += 1

    def abort(self) -> None:
        """Close without the completeness check: another error is already on its way up."""
        self._file.close()

    def close(self) -> None:
        self._file.close()
        if self._next != len(self._infos):
            raise TvstoreError(f"internal error: {self.path} got {self._next} of {len(self._infos)} tensors")


def _fill(stream: SafetensorsStream, tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
    """Write every declared tensor, then close; on any error close quietly and let it propagate."""
    try:
        for name, tensor in tensors:
            stream.write(name, tensor)
    except BaseException:
        stream.abort()
        raise
    stream.close()


def plan_shards(infos: Sequence[TensorInfo], max_shard_bytes: int) -> list[list[TensorInfo]]:
    """Greedy, order-preserving split into shards of at most ``max_shard_bytes``."""
    shards: list[list[TensorInfo]] = [[]]
    size = 0
    for info in infos:
        if shards[-1] and size + info.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(info)
        size += info.nbytes
    return shards


def prepare_output(out: Path) -> Path:
    """Refuse to overwrite; return a hidden staging folder beside ``out``."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out} already exists and is not an empty directory")
    make_folder(out.parent, "output folder")
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    as_if_created(staging)
    return staging


def write_safetensors(
    path: Path, infos: Sequence[TensorInfo], tensors: Iterable[tuple[str, torch.Tensor]], metadata: dict[str, str] | None = None
) -> Path:
    """Stream one ``.safetensors`` file atomically (temp file, then rename)."""
    if path.exists():
        raise UsageError(f"{path} already exists")
    make_folder(path.parent, "output folder")
    with replacing(path, suffix=".partial") as tmp:
        as_if_created(tmp)
        _fill(SafetensorsStream(tmp, infos, metadata), tensors)
    return path


def write_checkpoint_dir(
    out: Path,
    infos: Sequence[TensorInfo],
    tensors: Iterable[tuple[str, torch.Tensor]],
    side_files: Iterable[tuple[str, bytes]] = (),
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
    metadata: dict[str, str] | None = None,
) -> Path:
    """A Hugging Face directory: ``model.safetensors`` or shards + index, and side files."""
    with staged_dir(out) as staging:
        shards = plan_shards(infos, max_shard_bytes)
        names = [SINGLE_NAME] if len(shards) == 1 else [
            f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))
        ]
        it = iter(tensors)
        for fname, shard in zip(names, shards):
            _fill(SafetensorsStream(staging / fname, shard, metadata), (next(it) for _ in shard))
        if len(shards) > 1:
            weight_map = {info.name: fname for fname, shard in zip(names, shards) for info in shard}
            index = {"metadata": {"total_size": sum(i.nbytes for i in infos)}, "weight_map": weight_map}
            (staging / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
        for rel, data in side_files:
            target = staging / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    return out


@contextmanager
def staged_dir(out: Path) -> Iterator[Path]:
    """A hidden staging folder that becomes ``out`` if the block succeeds and vanishes if it fails.

    For outputs of several files (an adapter, a checkpoint per task): never half-written.
    """
    staging = prepare_output(out)
    try:
        yield staging
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
