"""Read-only queries behind ``ls`` and ``show``: rows in, plain summaries out."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import func, select
from sqlalchemy.orm import Session, joinedload

from tvstore.db.models import BaseModel, Tag, TaskVector
from tvstore.db.queries import get_vector
from tvstore.ops.info import BaseInfo, VectorInfo
from tvstore.ops.tags import tags_of


def list_vectors(session: Session, name: str | None = None, all_versions: bool = False) -> list[VectorInfo]:
    """Vectors sorted by name: the newest version of each name, or every version."""
    query = select(TaskVector).options(joinedload(TaskVector.base)).order_by(TaskVector.name, TaskVector.version)
    if name is not None:
        query = query.where(TaskVector.name == name)
    if not all_versions:  # newest per name, chosen by the database (uses the (name, version) index)
        newest = select(TaskVector.name, func.max(TaskVector.version).label("version")).group_by(TaskVector.name)
        if name is not None:
            newest = newest.where(TaskVector.name == name)
        sub = newest.subquery()
        query = query.join(sub, (TaskVector.name == sub.c.name) & (TaskVector.version == sub.c.version))
    tags: dict[int, list[str]] = defaultdict(list)
    for vector_id, tag in session.execute(select(Tag.vector_id, Tag.tag)):
        tags[vector_id].append(tag)
    return [VectorInfo.of(v, tags.get(v.id, [])) for v in session.scalars(query)]


def show_vector(session: Session, ref: str) -> VectorInfo:
    vector = get_vector(session, ref)
    return VectorInfo.of(vector, tags_of(session, vector.id))


def list_bases(session: Session) -> list[BaseInfo]:
    return [BaseInfo.of(b) for b in session.scalars(select(BaseModel).order_by(BaseModel.name))]
