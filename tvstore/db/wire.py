"""Registry rows as JSON and back, for a client that works through ``tvstore serve``.

A remote client encodes and decodes tensors itself (blob bytes go straight
between it and the store), so it needs the same rows a local push or pull
reads: a base with its tensor manifest, a vector with its tensors and
components. They travel as plain dicts and come back as *transient* ORM
objects, which the per-tensor layer reads exactly as it reads loaded ones.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import DateTime, inspect

from tvstore.db.models import BaseModel, ComponentRow, TaskVector, VectorTensor

# the relationships that travel with each row (everything a source reads)
_CHILDREN: dict[type, tuple[str, ...]] = {
    BaseModel: ("tensors", "files"),
    TaskVector: ("base", "tensors"),
    VectorTensor: ("components",),
    ComponentRow: ("mask",),
}
R = TypeVar("R")


def row_to_dict(row: Any) -> dict[str, Any]:
    """Columns (datetimes as ISO text) and the travelling relationships, recursively."""
    out = {}
    for attr in inspect(type(row)).column_attrs:
        value = getattr(row, attr.key)
        out[attr.key] = value.isoformat() if isinstance(value, datetime) else value
    for rel in _CHILDREN.get(type(row), ()):
        value = getattr(row, rel)
        out[rel] = [row_to_dict(v) for v in value] if isinstance(value, list) else value and row_to_dict(value)
    return out


def row_from_dict(cls: type[R], data: dict[str, Any]) -> R:
    """A transient ``cls`` rebuilt from :func:`row_to_dict`'s output."""
    mapper = inspect(cls)
    kwargs: dict[str, Any] = {}
    for attr in mapper.column_attrs:
        value = data.get(attr.key)
        if value is not None and isinstance(attr.columns[0].type, DateTime):
            value = datetime.fromisoformat(value)
        kwargs[attr.key] = value
    for rel in _CHILDREN.get(cls, ()):
        target = mapper.relationships[rel].mapper.class_
        value = data.get(rel)
        kwargs[rel] = [row_from_dict(target, v) for v in value] if isinstance(value, list) else value and row_from_dict(target, value)
    return cls(**kwargs)
