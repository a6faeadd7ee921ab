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
    assert reg.init() == "0003"
    with reg.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []
    assert reg.schema_revision() == ("0003", "0003")
    assert reg.init() == "0003"  # idempotent
    reg.close()


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
    with pytest.raises(SchemaError, match=r"revision 9999, made by a newer tvstore \(this one knows up to 0003\): upgrade tvstore"):
        reg.list()
    reg.close()


def test_foreign_database_is_not_mistaken_for_a_registry(database_url: str, tmp_path) -> None:
    reg = Registry.open(database_url=database_url, blob_url=str(tmp_path / "b"))
    with reg.engine.begin() as conn:
        conn.execute(text("CREATE TABLE customers (id integer primary key)"))
    with pytest.raises(SchemaError, match="is not a tvstore registry"):
        reg.list()
    reg.close()
