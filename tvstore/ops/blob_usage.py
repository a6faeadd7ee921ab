"""Every blob the metadata refers to, and who refers to it.

gc needs the set (what to keep); verify needs the owners (whom to blame).
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import select
from sqlalchemy.orm import Session

from tvstore.db.models import BaseFile, BaseModel, BaseTensor, ComponentRow, Mask, TaskVector, VectorTensor
from tvstore.util.refs import versioned


def referenced_digests(session: Session) -> set[str]:
    used: set[str] = set()
    for column in (BaseTensor.blob_digest, BaseFile.blob_digest, ComponentRow.blob_digest, Mask.blob_digest):
        used.update(session.scalars(select(column).distinct()))
    return used


def blob_owners(session: Session) -> dict[str, list[str]]:
    """digest -> human-readable owners, e.g. ``vector bbc@2, tensor 'w' (component 0)``."""
    owners: dict[str, list[str]] = defaultdict(list)
    rows = session.execute(
        select(BaseModel.name, BaseTensor.name, BaseTensor.blob_digest).join(BaseTensor.base)
    )
    for base, tensor, digest in rows:
        owners[digest].append(f"base {base}, tensor {tensor!r}")
    for base, path, digest in session.execute(select(BaseModel.name, BaseFile.path, BaseFile.blob_digest).join(BaseModel, BaseFile.base_id == BaseModel.id)):
        owners[digest].append(f"base {base}, file {path!r}")
    comp_rows = session.execute(
        select(TaskVector.name, TaskVector.version, VectorTensor.name, ComponentRow.position,
               ComponentRow.blob_digest, Mask.blob_digest)
        .join(VectorTensor, VectorTensor.vector_id == TaskVector.id)
        .join(ComponentRow, ComponentRow.tensor_id == VectorTensor.id)
        .outerjoin(Mask, Mask.id == ComponentRow.mask_id)
    )
    for name, version, tensor, pos, digest, mask_digest in comp_rows:
        owners[digest].append(f"vector {versioned(name, version)}, tensor {tensor!r} (component {pos})")
        if mask_digest:
            owners[mask_digest].append(f"vector {versioned(name, version)}, tensor {tensor!r} (mask of component {pos})")
    return dict(owners)


def referenced_among(session: Session, digests: list[str]) -> set[str]:
    """Which of ``digests`` something refers to now (gc's re-mark for one chunk, under its claim)."""
    used: set[str] = set()
    for column in (BaseTensor.blob_digest, BaseFile.blob_digest, ComponentRow.blob_digest, Mask.blob_digest):
        used.update(session.scalars(select(column).where(column.in_(digests)).distinct()))
    return used
