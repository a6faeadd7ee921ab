"""Schema revisions: programmatic Alembic, and the check every command runs first.

The migrations ship inside the package (``tvstore.migrations``), so an
installed tvstore can upgrade any database it meets, as MLflow does.

The check every command runs reads the ``alembic_version`` row with plain
SQL and compares it with :data:`HEAD_REVISION`; Alembic itself is imported
only when a schema is not current (to upgrade, or to say why not), since
importing it and parsing the scripts cost every command ~0.2 s of start-up.
A test keeps the constant equal to the scripts' head.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import TYPE_CHECKING

from sqlalchemy import Engine, inspect, text

from tvstore.db.engine import check_integrity
from tvstore.errors import SchemaError

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

#: the newest revision in ``migrations/versions``: bump it with every new migration
HEAD_REVISION = "0004"

#: Alembic's default version table, which ``migrations/env.py`` keeps
VERSION_TABLE = "alembic_version"


def _shipped_config() -> Config:
    """An Alembic config pointing at the migration scripts shipped inside the package."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(files("tvstore.migrations")))
    return cfg


def alembic_config(engine: Engine) -> Config:
    cfg = _shipped_config()
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    cfg.attributes["engine"] = engine
    return cfg


@cache
def _scripts() -> ScriptDirectory:
    """The shipped migration scripts, parsed once per process: they cannot change under a running tvstore,
    and parsing them took half of an empty ``ls`` (3.7 ms)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_shipped_config())


def scripts_head() -> str:
    """The head of the shipped migration scripts, as Alembic reads them (what :data:`HEAD_REVISION` must equal)."""
    head = _scripts().get_current_head()
    assert head is not None
    return head


def head_revision(engine: Engine) -> str:
    return HEAD_REVISION


def current_revision(engine: Engine) -> str | None:
    """The database's schema revision, ``None`` before ``init`` (no version table, or an empty one)."""
    with engine.connect() as conn:
        if not inspect(conn).has_table(VERSION_TABLE):
            return None
        return conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate to ``revision``, refusing a damaged file, a foreign database and a newer tvstore's schema."""
    check_integrity(engine)
    blocker = _blocker(engine, current_revision(engine), head_revision(engine))
    if blocker is not None:
        raise SchemaError(blocker)
    from alembic import command

    command.upgrade(alembic_config(engine), revision)


def known_revisions(engine: Engine) -> set[str]:
    return {s.revision for s in _scripts().walk_revisions()}


def _blocker(engine: Engine, current: str | None, head: str) -> str | None:
    """What no upgrade may touch: tables that are not a tvstore registry's, or a newer tvstore's schema."""
    if current is None:
        with engine.connect() as conn:
            tables = sorted(inspect(conn).get_table_names())
        if not tables:
            return None
        shown = ", ".join(tables[:3]) + (", ..." if len(tables) > 3 else "")
        return (
            f"database {engine.url!r} is not a tvstore registry: it has tables ({shown}) "
            "but no schema revision (no alembic_version table); left untouched"
        )
    if current not in known_revisions(engine):
        return f"database schema is at revision {current}, made by a newer tvstore (this one knows up to {head}): upgrade tvstore"
    return None


def schema_problem(engine: Engine, current: str | None) -> str | None:
    """Why this tvstore cannot use a database at revision ``current``, and what to do; ``None`` if it can."""
    head = head_revision(engine)
    if current == head:
        return None
    blocker = _blocker(engine, current, head)
    if blocker is not None:
        return blocker
    if current is None:
        return "registry is not initialised: run `tvstore init`"
    return f"database schema is out of date (revision {current}, this tvstore needs {head}): run `tvstore db upgrade`"


def check_schema(engine: Engine) -> None:
    """Raise a ``SchemaError`` telling the user what to run if the schema is not current."""
    problem = schema_problem(engine, current_revision(engine))
    if problem is not None:
        raise SchemaError(problem)
