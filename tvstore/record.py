"""The one metadata transaction that makes a pushed vector visible.

Versions are allocated inside the transaction; if another client took the
same version first, the unique constraint rejects ours and we retry with the
next number, so concurrent pushes of one name get consecutive versions.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tvstore.checkpoint.dtypes import dtype_name
from tvstore.db.models import BaseModel, ComponentRow, LineageEdge, Mask, TaskVector, VectorTensor
from tvstore.db.queries import latest_version, record_blobs
from tvstore.push import PendingVector, StoredTensor

FINETUNED_FROM = "finetuned-from"
DIFFERENCE_OF = "difference-of"
COMPRESSED_FROM = "compressed-from"
MERGED_FROM = "merged-from"
RELATIONS = (FINETUNED_FROM, DIFFERENCE_OF, COMPRESSED_FROM, MERGED_FROM)

MAX_ATTEMPTS = 50

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


def commit_vector(
    session_factory: Callable[[], Session],
    pending: PendingVector,
    base: BaseModel,
    meta: dict,
    edges: EdgeFactory,
    recipe: dict | None = None,
) -> TaskVector:
    """Insert the vector, its tensors, components, masks, blobs and lineage in one transaction."""
    stats = pending.stats
    for attempt in range(MAX_ATTEMPTS):
        session = session_factory()
        try:
            with session.begin():
                record_blobs(session, _blob_sizes(pending))
                version = (latest_version(session, pending.name) or 0) + 1
                label = f"{pending.name}@{version}"
                vector = TaskVector(
                    name=pending.name, version=version, base_id=base.id, kind=pending.kind,
                    codec=pending.plan.get_config(),
                    raw_bytes=sum(t.raw_bytes for t in pending.tensors),
                    stored_bytes=sum(t.stored_bytes for t in pending.tensors),
                    num_params=sum(t.raw_bytes // t.dtype.itemsize for t in pending.tensors),
                    num_tensors=len(pending.tensors),
                    rel_l2=stats.rel_l2, cosine=stats.cosine, meta=meta, recipe=recipe,
                    source_digest=pending.source_digest,
                    tensors=[_tensor_row(i, t, label) for i, t in enumerate(pending.tensors)],
                )
                session.add(vector)
                session.flush()
                for edge in edges(session, vector):
                    edge.child_id = vector.id
                    session.add(edge)
            return vector
        except IntegrityError:
            if attempt == MAX_ATTEMPTS - 1:
                raise
        finally:
            session.close()
    raise AssertionError("unreachable")
