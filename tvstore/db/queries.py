"""Lookups shared by every operation: bases by name, vectors by reference."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, joinedload, selectinload

from tvstore.db.models import BaseModel, ComponentRow, Tag, TaskVector, VectorName, VectorTensor
from tvstore.errors import NotFoundError
from tvstore.util.refs import LATEST, Ref, parse_ref


def get_base(session: Session, name: str) -> BaseModel:
    base = session.scalar(select(BaseModel).where(BaseModel.name == name))
    if base is None:
        known = session.scalars(select(BaseModel.name).order_by(BaseModel.name)).all()
        hint = f" (known: {', '.join(known)})" if known else " (none registered: run `tvstore base add`)"
        raise NotFoundError(f"unknown base model {name!r}{hint}")
    return base


def latest_version(session: Session, name: str) -> int | None:
    return session.scalar(select(func.max(TaskVector.version)).where(TaskVector.name == name))


# everything a reader needs, in a handful of queries instead of one per tensor
FULL_VECTOR = (
    joinedload(TaskVector.base).selectinload(BaseModel.tensors),  # an xor component's tau reads the base
    selectinload(TaskVector.tensors).selectinload(VectorTensor.components).joinedload(ComponentRow.mask),
)
FULL_BASE = (selectinload(BaseModel.tensors), selectinload(BaseModel.files))


def get_full_vector(session: Session, ref: Ref | str) -> TaskVector:
    """Like :func:`get_vector`, with tensors, components, masks and base loaded (usable detached)."""
    vector = get_vector(session, ref)
    return session.scalars(select(TaskVector).where(TaskVector.id == vector.id).options(*FULL_VECTOR)).one()


def get_full_base(session: Session, base_id: int) -> BaseModel:
    return session.scalars(select(BaseModel).where(BaseModel.id == base_id).options(*FULL_BASE)).one()


def upsert(session: Session, table: type):  # noqa: ANN201 - the dialect's Insert construct
    """``INSERT`` with ``ON CONFLICT`` clauses, in the session's dialect (both speak it; the core ``insert`` does not)."""
    dialect = session.get_bind().dialect.name
    return {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[dialect](table)


def next_version(session: Session, name: str) -> int:
    """Take the next version of ``name`` (inside the caller's transaction; locks the name's row)."""
    stmt = upsert(session, VectorName).values(name=name, last_version=1)
    stmt = stmt.on_conflict_do_update(
        index_elements=["name"], set_={"last_version": VectorName.last_version + 1}
    ).returning(VectorName.last_version)
    return int(session.execute(stmt).scalar_one())


def get_vector(session: Session, ref: Ref | str) -> TaskVector:
    """Resolve ``name``, ``name@version`` or ``name:tag`` (``latest`` = highest version)."""
    ref = parse_ref(ref) if isinstance(ref, str) else ref
    version = ref.version
    if ref.tag is not None and ref.tag != LATEST:
        vector = session.scalar(
            select(TaskVector).join(Tag, Tag.vector_id == TaskVector.id).where(Tag.name == ref.name, Tag.tag == ref.tag)
        )
        if vector is None:
            raise NotFoundError(f"task vector {ref.name!r} has no tag {ref.tag!r}")
        return vector
    if version is None:
        version = latest_version(session, ref.name)
        if version is None:
            raise NotFoundError(f"no task vector named {ref.name!r}")
    vector = session.scalar(select(TaskVector).where(TaskVector.name == ref.name, TaskVector.version == version))
    if vector is None:
        have = latest_version(session, ref.name)
        detail = f"latest is {have}" if have else "no versions exist"
        raise NotFoundError(f"task vector {ref.name!r} has no version {version} ({detail})")
    return vector

