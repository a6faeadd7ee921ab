"""Engines for SQLite (embedded default) and PostgreSQL (teams), set up for concurrency.

Every engine also turns the database failures a user can meet (a corrupt or
read-only SQLite file, a server that does not answer) into one-line
``DatabaseError``s naming the file or server, so no command shows a driver
traceback.
"""

from __future__ import annotations

import sqlite3
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import URL, Engine, create_engine, event, text
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.exc import ArgumentError

from tvstore.errors import TvstoreError, UsageError
from tvstore.util.folders import writable

SQLITE_BUSY_TIMEOUT_MS = 30_000
# sqlite3 primary result codes (https://sqlite.org/rescode.html) that are the user's situation, not our bug.
SQLITE_CORRUPT, SQLITE_NOTADB, SQLITE_READONLY, SQLITE_CANTOPEN = 11, 26, 8, 14


class DatabaseError(TvstoreError):
    """The registry's database cannot be used: corrupt, read-only for a write, or unreachable."""


def _sqlite_pragmas(dbapi_connection: Any, _record: Any, read_only: bool = False) -> None:
    # WAL lets readers run beside one writer; foreign keys are off by default in
    # SQLite; the busy timeout turns lock contention into waiting, not errors.
    # A read-only file keeps the journal mode it has (changing it is a write).
    cursor = dbapi_connection.cursor()
    if not read_only:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def normalize_url(url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` and route them to psycopg 3."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def sqlite_read_only(database: str | None) -> bool:
    """An existing SQLite file we cannot write, or in a folder we cannot write (no room for its -wal/-shm)."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return False
    path = Path(database)
    return path.exists() and not (writable(path) and writable(path.parent))


def _open_read_only(database: str) -> sqlite3.Connection:
    """Open a registry file on a read-only mount or owned by someone else.

    ``mode=ro`` keeps SQLite from writing; where the folder is not writable either,
    no WAL index can be made beside the file, so it is opened ``immutable`` (no
    locks, no WAL: what a read-only mount holds does not change under us).
    """
    flags = "mode=ro" if writable(Path(database).parent) else "mode=ro&immutable=1"
    uri = f"file:{quote(str(Path(database).resolve()))}?{flags}"
    return sqlite3.connect(uri, uri=True, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000, check_same_thread=False)


def _sqlite_engine(url: URL) -> Engine:
    read_only = sqlite_read_only(url.database)
    if read_only:
        engine = create_engine(url, creator=partial(_open_read_only, url.database))
    else:
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
    event.listen(engine, "connect", partial(_sqlite_pragmas, read_only=read_only))
    return engine


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def corrupt(path: str | None, detail: str) -> str:
    return f"registry database {path} is corrupt ({detail}): restore it from a backup"


def _sqlite_problem(ctx: ExceptionContext, exc: sqlite3.Error) -> str | None:
    path = ctx.engine.url.database if ctx.engine is not None else "?"
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code in (SQLITE_CORRUPT, SQLITE_NOTADB):
        return corrupt(path, str(exc))
    if code == SQLITE_READONLY:
        return f"registry database {path} is read-only: this command writes, run it where the registry is writable"
    if code == SQLITE_CANTOPEN:
        return f"cannot open registry database {path}: {exc}"
    return None


def _translate(ctx: ExceptionContext) -> None:
    """``handle_error`` hook: raise a one-line ``DatabaseError`` for what a user can meet; else let it be."""
    exc = ctx.original_exception
    if ctx.is_pre_ping:
        # A pooled connection that fails its ping is not reusable, whatever the driver calls the failure: the
        # pool opens a fresh one (whose own failure is reported below). psycopg can report a backend that died
        # during the ping as a ProgrammingError ("can't change 'autocommit' now"), not a disconnect.
        ctx.is_disconnect = True
        return
    if isinstance(exc, sqlite3.Error):
        problem = _sqlite_problem(ctx, exc)
    elif ctx.connection is None or ctx.is_disconnect:  # connecting failed, or the server went away
        url = ctx.engine.url.render_as_string(hide_password=True) if ctx.engine is not None else "?"
        problem = f"cannot connect to database {url}: {_first_line(exc)}"
    else:
        problem = None
    if problem is not None:
        raise DatabaseError(problem) from exc


def check_integrity(engine: Engine) -> None:
    """SQLite only: refuse a damaged file before migrating it (a page of junk can hide from ordinary reads)."""
    if engine.url.get_backend_name() != "sqlite":
        return
    with engine.connect() as conn:
        report = [row[0] for row in conn.execute(text("PRAGMA quick_check"))]
    if report != ["ok"]:
        detail = next(line for line in "\n".join(report).splitlines() if not line.startswith("***"))
        raise DatabaseError(corrupt(engine.url.database, f"integrity check: {detail}"))


def make_engine(url: str) -> Engine:
    url = normalize_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UsageError(f"invalid database URL {url!r}") from None
    if parsed.get_backend_name() == "sqlite":
        engine = _sqlite_engine(parsed)
    elif parsed.get_backend_name() == "postgresql":
        engine = create_engine(url, pool_pre_ping=True)
    else:
        raise UsageError(f"unsupported database {parsed.get_backend_name()!r}: use sqlite:/// or postgresql://")
    event.listen(engine, "handle_error", _translate)
    return engine
