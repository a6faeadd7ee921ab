"""Schema revisions: programmatic Alembic, and the check every command runs first.

The migrations ship inside the package (``tvstore.migrations``), so an
installed tvstore can upgrade any database it meets, as MLflow does.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect
from sqlalchemy.exc import OperationalError

from tvstore.errors import SchemaError


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(files("tvstore.migrations")))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    cfg.attributes["engine"] = engine
    return cfg


@cache
def _scripts() -> ScriptDirectory:
    """The shipped migration scripts, parsed once per process: they cannot change under a running tvstore,
    and parsing them took half of an empty ``ls`` (3.7 ms)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(files("tvstore.migrations")))
    return ScriptDirectory.from_config(cfg)


@cache
def _head() -> str:
    head = _scripts().get_current_head()
    assert head is not None
    return head


def head_revision(engine: Engine) -> str:
    return _head()


def current_revision(engine: Engine) -> str | None:
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except OperationalError as exc:
        raise SchemaError(f"cannot open database {engine.url!r}: {exc.orig}") from None


def upgrade(engine: Engine, revision: str = "head") -> None:
    command.upgrade(alembic_config(engine), revision)


def check_schema(engine: Engine) -> None:
    """Raise a ``SchemaError`` telling the user what to run if the schema is not current."""
    current = current_revision(engine)
    head = head_revision(engine)
    if current == head:
        return
    if current is None:
        with engine.connect() as conn:
            has_tables = bool(inspect(conn).get_table_names())
        if has_tables:
            raise SchemaError(f"database {engine.url!r} is not a tvstore registry (no schema revision)")
        raise SchemaError("registry is not initialised: run `tvstore init`")
    known = {s.revision for s in _scripts().walk_revisions()}
    if current not in known:
        raise SchemaError(
            f"database schema is at revision {current}, newer than this tvstore knows (head {head}): upgrade tvstore"
        )
    raise SchemaError(
        f"database schema is out of date (revision {current}, this tvstore needs {head}): run `tvstore db upgrade`"
    )
