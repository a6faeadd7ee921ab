"""Removing vectors and bases: what may go, and what lineage keeps of it.

Blobs stay until ``gc``; a descendant's lineage edge keeps a note of the
removed parent, so history still reads sensibly after a removal.
"""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from tvstore.db.models import BaseModel, ComponentRow, LineageEdge, Mask, TaskVector, VectorTensor
from tvstore.db.queries import get_base, get_vector
from tvstore.errors import TvstoreError, UsageError
from tvstore.ops.lineage import MERGED_FROM
from tvstore.util.refs import parse_ref


def remove_vectors(session: Session, ref: str, all_versions: bool = False) -> list[str]:
    """Delete one version (or every version of a name); returns their labels."""
    parsed = parse_ref(ref)
    if parsed.version is None and parsed.tag is None and not all_versions:
        raise UsageError(f"say which version to remove ({ref}@N or {ref}:TAG), or pass --all-versions")
    if all_versions:
        vectors = list(session.scalars(select(TaskVector).where(TaskVector.name == parsed.name)))
        if not vectors:
            get_vector(session, parsed.name)  # raises the not-found error
    else:
        vectors = [get_vector(session, parsed)]
    ids = [v.id for v in vectors]
    refuse_recipe_inputs(session, ids)
    _detach_children(session, ids)
    mask_ids = session.scalars(
        select(ComponentRow.mask_id).join(VectorTensor).where(VectorTensor.vector_id.in_(ids), ComponentRow.mask_id.is_not(None))
    ).all()
    removed = [v.label for v in vectors]
    for vector in vectors:
        session.delete(vector)
    session.flush()
    if mask_ids:
        session.execute(delete(Mask).where(Mask.id.in_(mask_ids)))
    return removed


def refuse_recipe_inputs(session: Session, ids: list[int]) -> None:
    """A merge stored as a recipe needs its inputs on every read; removing one would break it."""
    edges = session.scalars(
        select(LineageEdge).where(LineageEdge.parent_vector_id.in_(ids), LineageEdge.relation == MERGED_FROM)
    )
    for edge in edges:
        child = edge.child
        if child.is_recipe and child.id not in ids:
            raise TvstoreError(
                f"{edge.parent_vector.label} is an input of {child.label}, a merge stored as its recipe; "
                f"remove {child.label} first, or save the merge again with --codec"
            )


def _detach_children(session: Session, ids: list[int]) -> None:
    """Edges from the removed vectors keep the parent's label as a note instead of a dangling id."""
    for edge in session.scalars(select(LineageEdge).where(LineageEdge.parent_vector_id.in_(ids))):
        edge.parent_note = f"{edge.parent_note} (removed {edge.parent_vector.label})".strip()
        edge.parent_vector_id = None


def remove_base(session: Session, name: str) -> None:
    """Delete a base model that no task vector uses."""
    base: BaseModel = get_base(session, name)
    users = session.scalars(select(TaskVector).where(TaskVector.base_id == base.id).limit(3)).all()
    if users:
        raise TvstoreError(f"base {name!r} is used by task vectors ({', '.join(v.label for v in users)}, ...); remove them first")
    session.delete(base)
