"""Corrupt and missing blobs, on disk and in the bucket: named on read, listed by ``verify``.

Runs the real ``tvstore`` command (a subprocess) against SQLite + a local
blob folder and against PostgreSQL + the moto S3 server.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from sqlalchemy import select

from conftest import Cli
from s3_server import s3_bucket, s3_env, s3_server  # noqa: F401 - fixtures
from team_helpers import Checkpoints, assert_rebuilds, make_checkpoints
from tvstore import Registry
from tvstore.blobs import digest_bytes
from tvstore.db.models import ComponentRow, TaskVector, VectorTensor
from tvstore.errors import CorruptBlobError, NotFoundError


@dataclass
class Setup:
    database_url: str
    blob_url: str
    read: Callable[[str], bytes]  # the stored bytes of a blob, behind tvstore's back
    write: Callable[[str, bytes], None]  # overwrite them
    remove: Callable[[str], None]  # delete them
    cli: Cli
    store_url: str  # how errors name the store



def _local(tmp_path: Path, env: dict[str, str]) -> Setup:
    root = tmp_path / "blobs"

    def path(digest: str) -> Path:
        return root / "objects" / digest[:2] / digest[2:]

    def write(digest: str, data: bytes) -> None:
        path(digest).chmod(0o644)
        path(digest).write_bytes(data)

    db = f"sqlite:///{tmp_path / 'registry.db'}"
    cli = Cli({**env, "TVSTORE_DATABASE_URL": db, "TVSTORE_BLOB_URL": str(root)}, tmp_path)
    return Setup(db, str(root), lambda d: path(d).read_bytes(), write, lambda d: path(d).unlink(), cli, root.resolve().as_uri())


def _s3(tmp_path: Path, env: dict[str, str], database_url: str, bucket: str) -> Setup:
    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
    prefix = "team/reg"

    def key(digest: str) -> str:
        return f"{prefix}/objects/{digest[:2]}/{digest[2:]}"

    url = f"s3://{bucket}/{prefix}"
    return Setup(
        database_url, url,
        lambda d: client.get_object(Bucket=bucket, Key=key(d))["Body"].read(),
        lambda d, data: client.put_object(Bucket=bucket, Key=key(d), Body=data),
        lambda d: client.delete_object(Bucket=bucket, Key=key(d)),
        Cli({**env, "TVSTORE_DATABASE_URL": database_url, "TVSTORE_BLOB_URL": url}, tmp_path),
        url,
    )


@pytest.fixture(params=["sqlite-local", "postgres-s3"])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Setup:
    env = {k: v for k, v in os.environ.items() if k != "TVSTORE_HOME"}
    if request.param == "sqlite-local":
        return _local(tmp_path, env)
    bucket = request.getfixturevalue("s3_bucket")  # sets the AWS_* and cache variables in os.environ
    env = {k: v for k, v in os.environ.items() if k != "TVSTORE_HOME"}
    return _s3(tmp_path, env, request.getfixturevalue("pg_url"), bucket)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> Checkpoints:
    return make_checkpoints(tmp_path_factory.mktemp("ckpts"), count=4)


def blob_of(reg: Registry, vector: str, tensor: str) -> str:
    """The digest of component 0 of ``tensor`` in ``vector@1``."""
    with reg.session() as session:
        return session.scalar(
            select(ComponentRow.blob_digest).join(VectorTensor).join(TaskVector)
            .where(TaskVector.name == vector, TaskVector.version == 1, VectorTensor.name == tensor, ComponentRow.position == 0)
        )


def flipped(data: bytes) -> bytes:
    """The same length, one bit different in the middle."""
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :]


def test_corrupt_and_missing_blobs_are_named_on_read_and_listed_by_verify(setup: Setup, ckpts: Checkpoints, tmp_path: Path) -> None:
    with Registry.open(database_url=setup.database_url, blob_url=setup.blob_url) as reg:
        reg.init()
        reg.add_base("base", ckpts.base)
        for name, ft in (("a", "ft0"), ("b", "ft1"), ("c", "ft2"), ("d", "ft3")):
            reg.push(name, ckpts.finetunes[ft], base="base")
        assert_rebuilds(reg, "d", ckpts.tensors("ft3"), tmp_path / "warm")  # d's blobs now sit in the S3 cache
        own_a, own_b, shared = blob_of(reg, "a", "w5"), blob_of(reg, "b", "w6"), blob_of(reg, "a", "w1")
    assert shared == blob_of(Registry.open(database_url=setup.database_url, blob_url=setup.blob_url), "d", "w1")
    stored = setup.read(own_a)
    setup.write(own_a, flipped(stored))
    setup.remove(own_b)

    with Registry.open(database_url=setup.database_url, blob_url=setup.blob_url) as reg:
        with pytest.raises(CorruptBlobError) as corrupt:
            reg.delta_tensors("a")["w5"]
        assert str(corrupt.value) == (
            f"blob {own_a} is corrupt (vector a@1, tensor 'w5'): "
            f"its {len(stored)} bytes hash to {digest_bytes(flipped(stored))}"
        )
        with pytest.raises(NotFoundError) as missing:
            reg.delta_tensors("b")["w6"]
        assert str(missing.value) == f"blob {own_b} (vector b@1, tensor 'w6') is missing from {setup.store_url}"
        assert_rebuilds(reg, "c", ckpts.tensors("ft2"), tmp_path / "c")  # the others still read fine

    setup.write(shared, flipped(setup.read(shared)))  # every vector uses this one, d from a warm cache
    proc = setup.cli("verify", "--json", expect=1)
    report = json.loads(proc.stdout)
    assert report["ok"] is False
    assert report["affected"] == ["vector a@1", "vector b@1", "vector c@1", "vector d@1"]
    problems = {p["blob"]: (p["issue"], p["owners"]) for p in report["problems"]}
    assert problems == {
        own_a: ("corrupt", ["vector a@1, tensor 'w5' (component 0)"]),
        own_b: ("missing", ["vector b@1, tensor 'w6' (component 0)"]),
        shared: ("corrupt", [f"vector {v}@1, tensor 'w1' (component 0)" for v in "abcd"]),
    }
    proc = setup.cli("verify", expect=1)
    assert proc.stdout.splitlines()[-2:] == [
        "affected: vector a@1, vector b@1, vector c@1, vector d@1", "registry has problems",
    ]


def test_pull_of_a_corrupt_vector_fails_with_one_line_naming_vector_tensor_and_blob(
    setup: Setup, ckpts: Checkpoints, tmp_path: Path
) -> None:
    with Registry.open(database_url=setup.database_url, blob_url=setup.blob_url) as reg:
        reg.init()
        reg.add_base("base", ckpts.base)
        reg.push("a", ckpts.finetunes["ft0"], base="base")
        reg.push("b", ckpts.finetunes["ft1"], base="base")
        own_a, own_b = blob_of(reg, "a", "w5"), blob_of(reg, "b", "w6")
    stored = setup.read(own_a)
    setup.write(own_a, flipped(stored))
    setup.remove(own_b)
    proc = setup.cli("pull", "b", "--checkpoint", "--out", tmp_path / "b", expect=1)
    assert proc.stderr == f"error: blob {own_b} (vector b@1, tensor 'w6') is missing from {setup.store_url}\n"
    proc = setup.cli("pull", "a", "--out", tmp_path / "a.safetensors", expect=1)
    assert proc.stderr == (
        f"error: blob {own_a} is corrupt (vector a@1, tensor 'w5'): "
        f"its {len(stored)} bytes hash to {digest_bytes(flipped(stored))}\n"
    )
    leftovers = [p.name for p in tmp_path.iterdir() if p.name in ("a.safetensors", "b") or p.name.startswith((".a.", ".b."))]
    assert leftovers == []  # neither the outputs nor their staging files
