"""The audit log of a served registry: who (token name) did what to which ref, and when."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tvstore.db.models import AuditEntry
from tvstore.ops.info import iso


@dataclass(frozen=True)
class AuditInfo:
    at: str
    token: str
    action: str
    target: str
    detail: dict[str, Any]

    @classmethod
    def of(cls, row: AuditEntry) -> AuditInfo:
        return cls(iso(row.created_at), row.token_name, row.action, row.target, dict(row.detail))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def record(session: Session, token: str, action: str, target: str, detail: dict[str, Any] | None = None) -> None:
    """Add one entry to the caller's transaction.

    The server records an action after the registry call that made it has
    committed, so a refused or failed request leaves no entry (a crash in
    between would leave a change without one).
    """
    session.add(AuditEntry(token_name=token, action=action, target=target, detail=detail or {}))


def list_audit(session: Session, limit: int | None = None) -> list[AuditInfo]:
    """Entries oldest first (the newest ``limit`` of them, if given)."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc())
    if limit is not None:
        query = query.limit(limit)
    return [AuditInfo.of(r) for r in reversed(list(session.scalars(query)))]
