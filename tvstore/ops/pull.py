"""Pull: write a task vector as safetensors, or rebuild its fine-tune as a HF directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from tvstore.blobs import BlobStore
from tvstore.checkpoint import TensorInfo, write_checkpoint_dir, write_safetensors
from tvstore.checkpoint.prefix import own_names
from tvstore.checkpoint.writer import DEFAULT_SHARD_BYTES
from tvstore.db.models import BaseModel
from tvstore.ops.model_card import ModelCard
from tvstore.util.parallel import ordered_map
from tvstore.util.progress import Progress, no_progress
from tvstore.tensors.sources import BaseSource, VectorSource


def vector_metadata(vector: VectorSource) -> dict[str, str]:
    extras = [n for n in vector.names() if vector.is_extra(n)]
    return {
        "tvstore.vector": vector.label,
        "tvstore.base": vector.vector.base.name,
        "tvstore.extra_tensors": ",".join(extras),
    }


def pull_vector(vector: VectorSource, out: Path, progress: Progress = no_progress) -> Path:
    """tau (and extra tensors) as one ``.safetensors`` file, streamed."""
    infos = vector.infos()
    with progress(f"pulling {vector.label}", len(infos)) as advance:

        def tensors() -> Iterator[tuple[str, torch.Tensor]]:
            for name, value in zip(vector.names(), ordered_map(vector.get, vector.names())):
                yield name, value
                advance(1)

        return write_safetensors(out, infos, tensors(), vector_metadata(vector))


def side_files(base: BaseModel, blobs: BlobStore) -> Iterator[tuple[str, bytes]]:
    for f in base.files:
        yield f.path, blobs.get(f.blob_digest)


def checkpoint_tensors(base: BaseSource, vector: VectorSource) -> tuple[list[TensorInfo], list[str]]:
    """Output order: the base's tensors, then the vector's extras."""
    extras = [n for n in vector.names() if vector.is_extra(n)]
    infos = [i for i in base.infos() if i.name not in vector.absent] + [vector.info(n) for n in extras]
    return infos, extras


def rebuilt_tensors(base: BaseSource, vector: VectorSource, names: list[str],
                    workers: int | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, theta)`` for ``names`` in order, rebuilt on ``workers`` threads (a few tensors ahead)."""
    extras = {n for n in vector.names() if vector.is_extra(n)}

    def rebuild_one(name: str) -> torch.Tensor:
        if name in extras:
            return vector.get(name)
        weight = base.get(name)
        if name not in vector:
            return weight
        if isinstance(vector, VectorSource):  # the decoded base is ours: add into it, no copy
            return vector.rebuild(name, weight, in_place=True)
        return vector.rebuild(name, weight)

    yield from zip(names, ordered_map(rebuild_one, names, workers))


def pull_checkpoint(
    base: BaseSource,
    vector: VectorSource,
    blobs: BlobStore,
    out: Path,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
    progress: Progress = no_progress,
    card: ModelCard | None = None,
) -> Path:
    """base + vector, one tensor at a time, written as a directory ``transformers`` loads (with ``card``)."""
    infos, extras = checkpoint_tensors(base, vector)
    names = [i.name for i in infos]
    own = own_names(vector.vector.meta, extras)  # the fine-tune's names: a stripped ``bert.`` goes back on
    with progress(f"rebuilding {vector.label}", len(names)) as advance:

        def tensors() -> Iterator[tuple[str, torch.Tensor]]:
            for name, value in rebuilt_tensors(base, vector, names):
                yield own(name), value
                advance(1)

        files, metadata = side_files(base.base, blobs), vector_metadata(vector)
        if card is not None:
            files, metadata = card.attach(files, metadata)
        infos = [TensorInfo(own(i.name), i.dtype, i.shape) for i in infos]
        return write_checkpoint_dir(out, infos, tensors(), files, max_shard_bytes, metadata)
