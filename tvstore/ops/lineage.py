"""Lineage: what a vector came from (ancestors) and what was made from it (descendants)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tvstore.db.models import LineageEdge, TaskVector

FINETUNED_FROM = "finetuned-from"
DIFFERENCE_OF = "difference-of"
COMPRESSED_FROM = "compressed-from"
MERGED_FROM = "merged-from"
RELATIONS = (FINETUNED_FROM, DIFFERENCE_OF, COMPRESSED_FROM, MERGED_FROM)


@dataclass
class LineageNode:
    label: str  # "name@version", "base NAME" or an outside checkpoint
    relation: str | None = None  # how this node relates to the one above it
    weight: float | None = None
    kind: str = "vector"  # vector | base | checkpoint
    children: list[LineageNode] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "kind": self.kind}
        if self.relation:
            out["relation"] = self.relation
        if self.weight is not None:
            out["weight"] = self.weight
        out["children"] = [c.to_dict() for c in self.children]
        return out


def ancestors(session: Session, vector: TaskVector, seen: frozenset[int] = frozenset()) -> list[LineageNode]:
    """Parents of ``vector``, each with its own parents below it."""
    nodes = []
    edges = session.scalars(select(LineageEdge).where(LineageEdge.child_id == vector.id).order_by(LineageEdge.id))
    for edge in edges:
        if edge.parent_vector is not None and edge.parent_vector.id not in seen:
            parent = edge.parent_vector
            node = LineageNode(parent.label, edge.relation, edge.weight, "vector")
            node.children = ancestors(session, parent, seen | {vector.id})
        elif edge.parent_base is not None:
            node = LineageNode(f"base {edge.parent_base.name}", edge.relation, edge.weight, "base")
        else:
            node = LineageNode(edge.parent_note, edge.relation, edge.weight, "checkpoint")
        nodes.append(node)
    return nodes


def descendants(session: Session, vector: TaskVector, seen: frozenset[int] = frozenset()) -> list[LineageNode]:
    """Vectors made from ``vector``, each with its own descendants below it."""
    nodes = []
    edges = session.scalars(select(LineageEdge).where(LineageEdge.parent_vector_id == vector.id).order_by(LineageEdge.id))
    for edge in edges:
        child = edge.child
        if child.id in seen:
            continue
        node = LineageNode(child.label, edge.relation, edge.weight, "vector")
        node.children = descendants(session, child, seen | {vector.id})
        nodes.append(node)
    return nodes
