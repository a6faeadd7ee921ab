"""The commit transaction retries what another client caused, and nothing else.

Retried: the (name, version) unique conflict, PostgreSQL deadlocks and
serialization failures. Surfaced at once: every other integrity error (a
bug or bad data), every other database error.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

import tvstore.ops.commit as record
from team_helpers import Checkpoints, make_checkpoints
from tvstore import Registry


class Orig(Exception):
    """A stand-in DBAPI error carrying a SQLSTATE, as psycopg's do."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> Checkpoints:
    return make_checkpoints(tmp_path_factory.mktemp("ckpts"), count=1, tensors=3, shape=(8, 8))


@pytest.fixture
def reg(registry: Registry, ckpts: Checkpoints) -> Registry:
    registry.add_base("base", ckpts.base)
    return registry


def _fail_first(monkeypatch: pytest.MonkeyPatch, error: Exception) -> list[int]:
    """Make the first insert attempt raise ``error``; returns the attempt log."""
    attempts: list[int] = []
    insert = record._insert_vector

    def flaky(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        attempts.append(len(attempts) + 1)
        if len(attempts) == 1:
            raise error
        return insert(*args, **kwargs)

    monkeypatch.setattr(record, "_insert_vector", flaky)
    return attempts


@pytest.mark.parametrize(
    "error",
    [
        IntegrityError("INSERT", {}, Orig('duplicate key value violates unique constraint "uq_task_vectors_name"', "23505")),
        IntegrityError("INSERT", {}, Orig("UNIQUE constraint failed: task_vectors.name, task_vectors.version")),
        OperationalError("INSERT", {}, Orig("deadlock detected", "40P01")),
        OperationalError("INSERT", {}, Orig("could not serialize access", "40001")),
    ],
    ids=["pg-version-conflict", "sqlite-version-conflict", "deadlock", "serialization"],
)
def test_conflicts_caused_by_other_clients_are_retried(
    reg: Registry, ckpts: Checkpoints, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    attempts = _fail_first(monkeypatch, error)
    info = reg.push("v", ckpts.finetunes["ft0"], base="base")
    assert attempts == [1, 2]
    assert (info.name, info.version) == ("v", 1)
    assert reg.verify().ok


@pytest.mark.parametrize(
    "error",
    [
        IntegrityError("INSERT", {}, Orig('insert or update violates foreign key constraint "fk_components_blob_digest_blobs"', "23503")),
        IntegrityError("INSERT", {}, Orig("UNIQUE constraint failed: vector_tensors.vector_id, vector_tensors.name")),
        OperationalError("INSERT", {}, Orig("server closed the connection unexpectedly", "08006")),
    ],
    ids=["foreign-key", "other-unique", "connection-lost"],
)
def test_other_database_errors_surface_at_once(
    reg: Registry, ckpts: Checkpoints, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    attempts = _fail_first(monkeypatch, error)
    with pytest.raises(type(error)):
        reg.push("v", ckpts.finetunes["ft0"], base="base")
    assert attempts == [1]
    assert reg.list() == []


def test_a_real_integrity_error_is_not_retried(reg: Registry, ckpts: Checkpoints, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two tensors of one vector under one name: the database refuses it, once."""
    rows = record._tensor_row
    calls: list[str] = []

    def same_name(position, tensor, label):  # noqa: ANN001, ANN202
        calls.append(tensor.name)
        row = rows(position, tensor, label)
        row.name = "w0"
        return row

    monkeypatch.setattr(record, "_tensor_row", same_name)
    with pytest.raises(IntegrityError, match="vector_tensors"):
        reg.push("v", ckpts.finetunes["ft0"], base="base")
    assert calls == ["w0", "w1", "w2"]  # one attempt
    assert reg.list() == []
