"""The audit log of a served registry: who (token name) did what to which ref, and when.

An entry is written *inside the transaction that makes the change*, so a
change that fails leaves no entry and a committed change always has one.
The server runs each registry call under :func:`acting`, which puts an
:class:`Action` in a context variable; session events (installed once by
:func:`install`) add its entry to the first transaction of that call that
commits a change, whichever ops function opened it. The target of a change
that numbers a new version (push, merge, pack) is only known inside that
transaction, so it is read there from the vectors the transaction inserts.

``gc`` is the exception: it sweeps in many small transactions, each a blob
nobody refers to, and is recorded once at the end with its totals.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.orm import ORMExecuteState, Session

from tvstore.db.models import AuditEntry, TaskVector
from tvstore.ops.info import iso

#: session.info keys: a change was made in this transaction; vectors it inserted, deleted; the action it records
_CHANGED, _NEW, _GONE, _WRITING = "tvstore.audit.changed", "tvstore.audit.new", "tvstore.audit.gone", "tvstore.audit.writing"


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


@dataclass(frozen=True)
class Change:
    """The vectors one transaction inserts and deletes (what an entry's target and detail may name)."""

    inserted: list[TaskVector]
    deleted: list[TaskVector]


Describe = Callable[[Change], Any]


def new_versions(change: Change) -> str:
    """The versions a push, merge or pack numbered inside its transaction (``a@3, b@2``)."""
    return ", ".join(v.label for v in change.inserted)


@dataclass
class Action:
    """What one request does, recorded by the transaction that commits it.

    ``target`` and ``detail`` are values, or functions of the transaction's
    :class:`Change` (by default the target is :func:`new_versions`).
    """

    token: str
    action: str
    target: str | Describe = new_versions
    detail: dict[str, Any] | Describe = field(default_factory=dict)
    recorded: bool = False

    def entry(self, change: Change) -> AuditEntry:
        target = self.target(change) if callable(self.target) else self.target
        detail = self.detail(change) if callable(self.detail) else self.detail
        return AuditEntry(token_name=self.token, action=self.action, target=target, detail=detail)


_CURRENT: ContextVar[Action | None] = ContextVar("tvstore_audit_action", default=None)


@contextmanager
def acting(action: Action) -> Iterator[Action]:
    """Run registry calls on behalf of ``action``: the transaction committing its change records it."""
    reset = _CURRENT.set(action)
    try:
        yield action
    finally:
        _CURRENT.reset(reset)


def call_as(action: Action, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` under :func:`acting` (one call, on the thread that runs it)."""
    with acting(action):
        return fn(*args, **kwargs)


def install() -> None:
    """Listen to every ORM session once; sessions outside :func:`acting` are left as they are."""
    for name, fn in (("after_flush", _after_flush), ("do_orm_execute", _after_execute), ("before_commit", _before_commit),
                     ("after_commit", _after_commit), ("after_rollback", _forget)):
        if not event.contains(Session, name, fn):
            event.listen(Session, name, fn)


def _after_flush(session: Session, _context: Any) -> None:
    if _CURRENT.get() is None:
        return
    session.info[_CHANGED] = True
    _note_vectors(session)


def _note_vectors(session: Session) -> None:
    """The vectors about to be inserted or deleted (flushed ones would leave ``new``/``deleted`` after this)."""
    for key, pending in ((_NEW, session.new), (_GONE, session.deleted)):
        seen = session.info.setdefault(key, [])
        seen.extend(o for o in pending if isinstance(o, TaskVector) and o not in seen)


def _after_execute(state: ORMExecuteState) -> None:
    if _CURRENT.get() is not None and (state.is_insert or state.is_update or state.is_delete):
        state.session.info[_CHANGED] = True


def _before_commit(session: Session) -> None:
    action = _CURRENT.get()
    if action is None or action.recorded:
        return
    if not (session.info.get(_CHANGED) or session.new or session.dirty or session.deleted):
        return
    _note_vectors(session)
    session.add(action.entry(Change(session.info[_NEW], session.info[_GONE])))
    session.info[_WRITING] = action


def _after_commit(session: Session) -> None:
    action = session.info.get(_WRITING)
    if action is not None:
        action.recorded = True  # a later transaction of the same call records nothing more
    _forget(session)


def _forget(session: Session) -> None:
    for key in (_CHANGED, _NEW, _GONE, _WRITING):
        session.info.pop(key, None)


def record(session: Session, token: str, action: str, target: str, detail: dict[str, Any] | None = None) -> None:
    """Add one entry to the caller's transaction (``gc``'s summary, written after its sweeps)."""
    session.add(AuditEntry(token_name=token, action=action, target=target, detail=detail or {}))


def list_audit(session: Session, limit: int | None = None) -> list[AuditInfo]:
    """Entries oldest first (the newest ``limit`` of them, if given)."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc())
    if limit is not None:
        query = query.limit(limit)
    return [AuditInfo.of(r) for r in reversed(list(session.scalars(query)))]
