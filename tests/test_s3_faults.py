"""Pushes through a faulty S3 endpoint: transient faults are retried, a dead endpoint fails cleanly.

The ``tvstore`` command runs in a subprocess against PostgreSQL and the moto
S3 server, reached through the fault-injecting proxy via ``--s3-endpoint``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import func, select

from conftest import Cli
from fault_proxy import FaultProxy
from s3_server import MotoServer, s3_bucket, s3_env, s3_server  # noqa: F401 - fixtures
from team_helpers import Checkpoints, assert_rebuilds, make_checkpoints
from tvstore import Registry
from tvstore.db.models import Blob


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> Checkpoints:
    return make_checkpoints(tmp_path_factory.mktemp("ckpts"), count=2)


@pytest.fixture
def team(pg_url: str, s3_bucket: str, ckpts: Checkpoints) -> tuple[str, str]:
    """A registry on PostgreSQL + S3 (direct endpoint) holding the base."""
    urls = (pg_url, f"s3://{s3_bucket}/faults")
    with Registry.open(database_url=urls[0], blob_url=urls[1]) as reg:
        reg.init()
        reg.add_base("base", ckpts.base)
    return urls


def _cli(team: tuple[str, str], tmp_path: Path, **extra: str) -> Cli:
    env = {k: v for k, v in os.environ.items() if k != "TVSTORE_HOME"}
    env.update({"TVSTORE_DATABASE_URL": team[0], "TVSTORE_BLOB_URL": team[1], **extra})
    env["TVSTORE_CACHE_DIR"] = "off"  # every read goes through the proxy
    return Cli(env, tmp_path)


def test_push_survives_transient_5xx_throttling_and_dropped_connections(
    team: tuple[str, str], s3_server: MotoServer, ckpts: Checkpoints, tmp_path: Path
) -> None:
    with FaultProxy(s3_server.endpoint, seed=6) as proxy:
        # the first request of the push meets every kind of fault in a row: four failures, within the six
        # attempts a request gets (AWS_MAX_ATTEMPTS); the push's requests run one tensor at a time at first,
        # so two of each in a row would exceed one request's attempts and test the budget, not the recovery
        for action in ("503", "500", "drop", "lose-reply"):
            proxy.fail_next(1, action)
        proxy.fail_fraction(0.1, "503")  # SlowDown throttling, throughout
        proxy.fail_fraction(0.05, "drop")
        cli = _cli(team, tmp_path)
        cli("--s3-endpoint", proxy.endpoint, "push", "flaky", ckpts.finetunes["ft0"], "--base", "base")
        faults = {a: proxy.faults(a) for a in ("503", "500", "drop", "lose-reply")}
    assert faults["500"] == 1 and faults["lose-reply"] == 1
    assert faults["503"] >= 2 and faults["drop"] >= 1  # throttling throughout: more than the first one
    with Registry.open(database_url=team[0], blob_url=team[1]) as reg:  # straight to the server
        assert [(v.name, v.version) for v in reg.list()] == [("flaky", 1)]
        assert reg.verify().ok
        assert_rebuilds(reg, "flaky", ckpts.tensors("ft0"), tmp_path / "rebuilt")


#: how the one-line error explains each kind of dead endpoint
EXPLANATION = {"drop": "endpoint unreachable after retries (", "503": "the endpoint kept failing (503 503) after 3 attempts"}


@pytest.mark.parametrize("action", ["drop", "503"])
def test_push_to_a_dead_endpoint_fails_in_one_line_and_commits_nothing(
    team: tuple[str, str], s3_server: MotoServer, ckpts: Checkpoints, tmp_path: Path, action: str
) -> None:
    with Registry.open(database_url=team[0], blob_url=team[1]) as reg:
        with reg.session() as session:
            blob_rows = session.scalar(select(func.count()).select_from(Blob))
    with FaultProxy(s3_server.endpoint) as proxy:
        proxy.down(action)
        cli = _cli(team, tmp_path, AWS_MAX_ATTEMPTS="3")
        proc = cli("--s3-endpoint", proxy.endpoint, "push", "doomed", ckpts.finetunes["ft1"], "--base", "base", expect=1)
        assert proxy.faults(action) >= 3  # it did retry
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    where = f"error: cannot open in bucket {team[1][5:].split('/')[0]!r} at {proxy.endpoint}: "
    assert lines[0].startswith(where + EXPLANATION[action]), lines[0]
    with Registry.open(database_url=team[0], blob_url=team[1]) as reg:
        assert reg.list() == []
        with reg.session() as session:
            assert session.scalar(select(func.count()).select_from(Blob)) == blob_rows
        assert reg.verify().ok
