"""The one metadata transaction that makes a pushed vector visible.

Versions are taken inside the transaction from the name's ``vector_names``
row (one upsert, which locks the row until commit), so concurrent pushes of
one name get consecutive versions and a removed version is never reused.
Should the unique constraint on (name, version) still fire, the transaction
is retried; so are PostgreSQL's transient deadlock/serialization aborts. Any
other integrity error is a bug or bad data and surfaces.

The transaction first *claims* the blob rows of every blob the vector uses
(see :mod:`tvstore.ops.claims`) and then checks that the blobs are still in
the store. gc sweeps each blob under the same claim, so either gc saw this
vector's references, or this push sees the blob gone and commits nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from tvstore.ops.claims import claim_blobs, check_blobs_present
from tvstore.blobs import BlobStore
from tvstore.checkpoint.dtypes import dtype_name
from tvstore.checkpoint.prefix import with_prefix
from tvstore.db.models import BaseModel, ComponentRow, LineageEdge, Mask, TaskVector, VectorTensor
from tvstore.db.queries import next_version
from tvstore.ops.lineage import COMPRESSED_FROM, DIFFERENCE_OF, FINETUNED_FROM
from tvstore.ops.push import PendingVector, StoredTensor
from tvstore.util.refs import versioned


MAX_ATTEMPTS = 50
#: the unique constraint on (name, version), as PostgreSQL and SQLite name it in their errors
VERSION_CONFLICT_MARKERS = ("uq_task_vectors_name", "task_vectors.name, task_vectors.version")
#: PostgreSQL SQLSTATEs that abort a transaction only because another one ran beside it
TRANSIENT_SQLSTATES = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected

# (session, new vector) -> lineage edges; lets callers describe their own parents
EdgeFactory = Callable[[Session, TaskVector], list[LineageEdge]]


def _tensor_row(position: int, t: StoredTensor, mask_label: str) -> VectorTensor:
    comps = []
    for i, c in enumerate(t.components):
        mask = None
        if c.mask_blob is not None:
            mask = Mask(name=c.mask_name or mask_label, tensor_name=t.name, shape=list(t.shape), blob_digest=c.mask_blob)
        comps.append(
            ComponentRow(position=i, kind=c.kind, codec=c.codec, blob_digest=c.blob, scale=c.scale, mask=mask)
        )
    return VectorTensor(
        position=position, name=t.name, role=t.role, dtype=dtype_name(t.dtype), shape=list(t.shape),
        codec=t.codec, raw_bytes=t.raw_bytes, stored_bytes=t.stored_bytes,
        rel_l2=t.stats.rel_l2, cosine=t.stats.cosine, components=comps,
    )


def is_version_conflict(exc: IntegrityError) -> bool:
    """Whether ``exc`` is another client taking our version number first (and nothing else)."""
    return any(marker in str(exc.orig) for marker in VERSION_CONFLICT_MARKERS)


def is_transient(exc: DBAPIError) -> bool:
    """A PostgreSQL deadlock or serialization abort: retrying the whole transaction is the fix."""
    return getattr(exc.orig, "sqlstate", None) in TRANSIENT_SQLSTATES


def _blob_sizes(pending: PendingVector) -> list[tuple[str, int]]:
    sizes = []
    for t in pending.tensors:
        for c in t.components:
            sizes.append((c.blob, c.blob_size))
            if c.mask_blob:
                sizes.append((c.mask_blob, c.mask_size))
    return sizes


def source_edges(pending: PendingVector) -> EdgeFactory:
    """Lineage for pushes: finetuned-from the base, or difference-of two checkpoints."""

    def make(session: Session, vector: TaskVector) -> list[LineageEdge]:
        if not pending.parent_digests:
            return [LineageEdge(relation=FINETUNED_FROM, parent_base_id=vector.base_id, parent_note=f"base {pending.base_name}")]
        edges = []
        for role, weight in (("to", 1.0), ("from", -1.0)):
            path, digest = pending.parent_digests[role]
            parent = session.scalar(
                select(TaskVector).where(TaskVector.source_digest == digest).order_by(TaskVector.id.desc()).limit(1)
            )
            edges.append(
                LineageEdge(relation=DIFFERENCE_OF, parent_vector_id=parent.id if parent else None,
                            parent_note=f"{role} checkpoint {path} (sha256:{digest[:12]})", weight=weight)
            )
        return edges

    return make


def compressed_from(parent: TaskVector) -> EdgeFactory:
    """Lineage for a re-encoded vector (``pack``): compressed-from the version it re-encodes."""

    def make(session: Session, child: TaskVector) -> list[LineageEdge]:
        return [LineageEdge(relation=COMPRESSED_FROM, parent_vector_id=parent.id, parent_note=parent.label)]

    return make


def commit_vector(
    session_factory: Callable[[], Session],
    pending: PendingVector,
    base: BaseModel,
    meta: dict,
    edges: EdgeFactory,
    recipe: dict | None = None,
    blobs: BlobStore | None = None,
) -> TaskVector:
    """Insert the vector, its tensors, components, masks, blobs and lineage in one transaction.

    With ``blobs`` given, the claimed blobs are checked to be in the store
    before the commit (a ``BlobVanishedError`` otherwise, nothing committed).
    """
    return commit_vectors(session_factory, [(pending, meta, edges, recipe)], base, blobs)[0]


def commit_vectors(
    session_factory: Callable[[], Session],
    items: list[tuple[PendingVector, dict, EdgeFactory, dict | None]],
    base: BaseModel,
    blobs: BlobStore | None = None,
) -> list[TaskVector]:
    """Several vectors (a packed group) in one transaction: all become visible, or none."""
    sizes = [size for pending, *_ in items for size in _blob_sizes(pending)]
    for attempt in range(MAX_ATTEMPTS):
        last = attempt == MAX_ATTEMPTS - 1
        session = session_factory()
        try:
            with session.begin():
                claim_blobs(session, sizes)
                if blobs is not None:
                    check_blobs_present(blobs, [d for d, _ in sizes])
                return [
                    _insert_vector(session, pending, base, meta, edges, recipe)
                    for pending, meta, edges, recipe in items
                ]
        except IntegrityError as exc:
            if last or not is_version_conflict(exc):
                raise
        except DBAPIError as exc:
            if last or not is_transient(exc):
                raise
        finally:
            session.close()
    raise AssertionError("unreachable")


def _insert_vector(
    session: Session, pending: PendingVector, base: BaseModel, meta: dict, edges: EdgeFactory, recipe: dict | None
) -> TaskVector:
    """The rows of one vector, at the next free version of its name (inside the caller's transaction)."""
    stats = pending.stats
    version = next_version(session, pending.name)
    label = versioned(pending.name, version)
    vector = TaskVector(
        name=pending.name, version=version, base_id=base.id, kind=pending.kind,
        codec=pending.codec_config or pending.plan.get_config(),
        raw_bytes=sum(t.raw_bytes for t in pending.tensors),
        stored_bytes=sum(t.stored_bytes for t in pending.tensors),
        num_params=sum(t.raw_bytes // t.dtype.itemsize for t in pending.tensors),
        num_tensors=sum(t.role != "absent" for t in pending.tensors),
        rel_l2=stats.rel_l2, cosine=stats.cosine, meta=with_prefix(meta, pending.name_prefix), recipe=recipe,
        source_digest=pending.source_digest,
        tensors=[_tensor_row(i, t, label) for i, t in enumerate(pending.tensors)],
    )
    session.add(vector)
    session.flush()
    for edge in edges(session, vector):
        edge.child_id = vector.id
        session.add(edge)
    session.flush()
    return vector
