"""Tags: mutable names (``NAME:TAG``) that point at one version."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from tvstore.db.models import TaskVector, Tag
from tvstore.db.queries import get_vector
from tvstore.errors import UsageError
from tvstore.util.refs import LATEST, check_tag


def set_tag(session: Session, ref: str, tag: str) -> TaskVector:
    """Point ``name:tag`` at ``ref``, moving it if it pointed elsewhere; returns the tagged vector."""
    check_tag(tag)
    if tag == LATEST:
        raise UsageError("'latest' always means the newest version and cannot be set")
    vector = get_vector(session, ref)
    existing = session.scalar(select(Tag).where(Tag.name == vector.name, Tag.tag == tag))
    if existing is None:
        session.add(Tag(name=vector.name, tag=tag, vector_id=vector.id))
    else:
        existing.vector_id = vector.id
    return vector


def remove_tag(session: Session, name: str, tag: str) -> None:
    existing = session.scalar(select(Tag).where(Tag.name == name, Tag.tag == tag))
    if existing is None:
        raise UsageError(f"task vector {name!r} has no tag {tag!r}")
    session.delete(existing)


def tags_of(session: Session, vector_id: int) -> list[str]:
    return list(session.scalars(select(Tag.tag).where(Tag.vector_id == vector_id)))
