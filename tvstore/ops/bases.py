"""Registering a base model: its weights and side files go into the blob store.

Each tensor is one blob of its plain bytes (the ``raw`` codec: a base
compresses only ~1.2x, and it is read on every rebuild, so it is kept
readable without decoding), so identical tensors across bases (tied
embeddings, a re-uploaded base) are stored once, and a checkpoint can be
rebuilt from the registry alone. Bases registered before stay in the
``lossless`` codec their rows name, and read as before.

No transaction is open while the blobs are written (minutes for a large
base): the rows go in afterwards, in one short transaction that claims the
blobs and checks they are still in the store, as a push's commit does (see
:mod:`tvstore.ops.claims`), so a gc running meanwhile cannot leave the base
pointing at swept blobs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from tvstore.blobs import BlobStore
from tvstore.checkpoint import open_checkpoint
from tvstore.checkpoint.digest import manifest_digest, tensor_digest
from tvstore.checkpoint.dtypes import dtype_name
from tvstore.codecs.raw import Raw
from tvstore.db.models import BaseFile, BaseModel, BaseTensor
from tvstore.errors import AlreadyExistsError
from tvstore.ops.claims import check_blobs_present, claim_blobs
from tvstore.tensors.encode import check_finite
from tvstore.util.parallel import ordered_map
from tvstore.util.progress import Progress, no_progress

_CODEC = Raw()


def add_base(
    session_factory: Callable[[], Session], blobs: BlobStore, name: str, path: Path, progress: Progress = no_progress
) -> BaseModel:
    """Store a base's tensors and side files, then commit its rows; returns the committed (detached) row."""
    with session_factory() as session:
        _check_new(session, name)
    base, sizes = store_base(blobs, name, path, progress)
    return commit_base(session_factory, blobs, base, sizes)


def commit_base(
    session_factory: Callable[[], Session], blobs: BlobStore, base: BaseModel, sizes: list[tuple[str, int]]
) -> BaseModel:
    """The rows of a base whose blobs are stored (here, or by a remote client), in one short transaction."""
    with session_factory() as session, session.begin():
        _check_new(session, base.name)  # another client may have added it meanwhile
        claim_blobs(session, sizes)
        check_blobs_present(blobs, [d for d, _ in sizes], "base add")
        session.add(base)
    return base


def _check_new(session: Session, name: str) -> None:
    if session.scalar(select(BaseModel.id).where(BaseModel.name == name)) is not None:
        raise AlreadyExistsError(f"base model {name!r} already exists")


def store_base(blobs: BlobStore, name: str, path: Path, progress: Progress = no_progress) -> tuple[BaseModel, list[tuple[str, int]]]:
    """Put every tensor and side file; the unsaved base row and ``(digest, size)`` of each blob."""
    with open_checkpoint(path) as ckpt:
        infos = list(ckpt.infos())

        def work(tname: str) -> tuple[str, str, int]:
            tensor = ckpt.get(tname)
            check_finite(tname, tensor, "the base weight")
            payload = _CODEC.encode(tensor)
            return tensor_digest(tensor), blobs.put(payload), len(payload)

        rows, sizes, digests = [], [], []
        with progress(f"adding base {name}", len(infos)) as advance:
            for pos, (info, (tdigest, blob, size)) in enumerate(zip(infos, ordered_map(work, ckpt.names()))):
                rows.append(
                    BaseTensor(position=pos, name=info.name, dtype=dtype_name(info.dtype), shape=list(info.shape),
                               codec=_CODEC.get_config(), blob_digest=blob)
                )
                sizes.append((blob, size))
                digests.append((info.name, tdigest))
                advance(1)
        files = []
        for rel in ckpt.side_files():
            data = (ckpt.path / rel).read_bytes()
            files.append(BaseFile(path=rel.as_posix(), blob_digest=blobs.put(data)))
            sizes.append((files[-1].blob_digest, len(data)))
    base = BaseModel(
        name=name,
        digest=manifest_digest(digests),
        source=str(Path(path).expanduser().resolve()),
        num_params=sum(i.numel for i in infos),
        raw_bytes=sum(i.nbytes for i in infos),
        stored_bytes=sum(s for _, s in sizes),
        tensors=rows,
        files=files,
    )
    return base, sizes
