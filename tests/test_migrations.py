"""Migrations build exactly the models' schema, on SQLite and PostgreSQL; schema errors are clear."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from tvstore import Registry
from tvstore.db.models import Base
from tvstore.errors import SchemaError


def test_migrations_match_the_models(database_url: str, tmp_path) -> None:
    reg = Registry.open(database_url=database_url, blob_url=str(tmp_path / "b"))
    assert reg.init() == "0004"
    with reg.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []
    assert reg.schema_revision() == ("0004", "0004")
    assert reg.init() == "0004"  # idempotent
    reg.close()


def test_head_revision_constant_is_the_scripts_head() -> None:
    """The schema check compares with a constant, not the parsed scripts: a new migration must bump it."""
    from tvstore.db.migrate import HEAD_REVISION, scripts_head

    assert HEAD_REVISION == scripts_head() == "0004"


def test_uninitialised_registry_says_run_init(database_url: str, tmp_path) -> None:
    reg = Registry.open(database_url=database_url, blob_url=str(tmp_path / "b"))
    with pytest.raises(SchemaError, match=r"run `tvstore init`"):
        reg.list()
    reg.close()


def test_schema_from_a_newer_tvstore_is_refused(database_url: str, tmp_path) -> None:
    reg = Registry.open(database_url=database_url, blob_url=str(tmp_path / "b"))
    reg.init()
    with reg.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(SchemaError, match=r"revision 9999, made by a newer tvstore \(this one knows up to 0004\): upgrade tvstore"):
        reg.list()
    reg.close()


def test_foreign_database_is_not_mistaken_for_a_registry(database_url: str, tmp_path) -> None:
    reg = Registry.open(database_url=database_url, blob_url=str(tmp_path / "b"))
    with reg.engine.begin() as conn:
        conn.execute(text("CREATE TABLE customers (id integer primary key)"))
    with pytest.raises(SchemaError, match="is not a tvstore registry"):
        reg.list()
    reg.close()


def test_components_refuse_an_unknown_kind(database_url: str, tmp_path) -> None:
    """The kinds a rebuild knows are the only ones the database stores (an older release skips the rest)."""
    from sqlalchemy.exc import IntegrityError

    from tvstore.codecs.encoded import KINDS

    reg = Registry.open(database_url=database_url, blob_url=str(tmp_path / "b"))
    reg.init()
    with reg.engine.connect() as conn:
        check = [c for c in Base.metadata.tables["components"].constraints if c.name == "ck_components_kind"]
        assert str(check[0].sqltext) == f"kind IN {KINDS}"
        with pytest.raises(IntegrityError, match="ck_components_kind|CHECK constraint failed"):
            conn.execute(text("INSERT INTO components (id, tensor_id, position, kind, codec, blob_digest, scale) "
                              "VALUES (1, 1, 0, 'sub', '{}', 'x', 1.0)"))
    reg.close()
