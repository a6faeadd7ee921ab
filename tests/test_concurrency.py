"""Many clients on one registry: concurrent pushes, and gc racing them.

Runs on the team setup (PostgreSQL + the moto S3 server) and on the embedded
one (SQLite + a local blob folder). The pushers are real processes forked by
``push_driver.py`` after one import of tvstore, started together at one start
line.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text

from s3_server import s3_bucket, s3_env, s3_server  # noqa: F401 - fixtures
from team_helpers import Checkpoints, assert_rebuilds, make_checkpoints, run_driver
from tvstore import Registry
from tvstore.ops.claims import BlobVanishedError
from tvstore.db.models import ComponentRow, VectorTensor
from tvstore.db.queries import get_base, get_full_base
import tvstore.ops.bases as bases_module
import tvstore.ops.gc as gc_module
import tvstore.ops.commit as record_module

PROCESSES = 8
GRACE_S = 5.0


@pytest.fixture(params=["sqlite-local", "postgres-s3"])
def team(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """``(database_url, blob_url)`` of an empty, initialised registry."""
    if request.param == "sqlite-local":
        urls = (f"sqlite:///{tmp_path / 'registry.db'}", str(tmp_path / "blobs"))
    else:
        urls = (request.getfixturevalue("pg_url"), f"s3://{request.getfixturevalue('s3_bucket')}/team")
    with Registry.open(database_url=urls[0], blob_url=urls[1]) as reg:
        reg.init()
    return urls


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> Checkpoints:
    return make_checkpoints(tmp_path_factory.mktemp("ckpts"), count=5)


def _open(team: tuple[str, str]) -> Registry:
    return Registry.open(database_url=team[0], blob_url=team[1])


def _jobs(ckpts: Checkpoints, process: int) -> list[dict]:
    """Two pushes per process: ``shared`` (every process) and ``odd``/``even`` (half of them)."""
    ft = f"ft{process % 4}"
    other = f"ft{(process + 1) % 4}"
    return [
        {"name": "shared", "path": str(ckpts.finetunes[ft]), "base": "base", "meta": {"pusher": process, "ckpt": ft}},
        {"name": ("even", "odd")[process % 2], "path": str(ckpts.finetunes[other]), "base": "base",
         "meta": {"pusher": process, "ckpt": other}},
    ]


def _check_every_push_landed_once(reg: Registry, ckpts: Checkpoints, tmp_path: Path) -> None:
    """Versions 1..N per name, one per push, each rebuilding the exact checkpoint it came from."""
    expected = Counter((j["name"], j["meta"]["pusher"], j["meta"]["ckpt"]) for p in range(PROCESSES) for j in _jobs(ckpts, p))
    stored = reg.list(all_versions=True)
    assert Counter((v.name, v.meta["pusher"], v.meta["ckpt"]) for v in stored) == expected
    for name, count in (("shared", PROCESSES), ("even", PROCESSES // 2), ("odd", PROCESSES // 2)):
        assert [v.version for v in stored if v.name == name] == list(range(1, count + 1))
    for v in stored:
        assert_rebuilds(reg, f"{v.name}@{v.version}", ckpts.tensors(v.meta["ckpt"]), tmp_path / f"{v.name}-{v.version}")


def test_eight_processes_push_overlapping_vectors(team: tuple[str, str], ckpts: Checkpoints, tmp_path: Path) -> None:
    with _open(team) as reg:
        reg.add_base("base", ckpts.base)
    spec = {"database_url": team[0], "blob_url": team[1], "pushers": [_jobs(ckpts, p) for p in range(PROCESSES)]}
    report = run_driver(spec, tmp_path / "driver")
    assert [p.get("exit") for p in report["pushers"]] == [0] * PROCESSES, report["stderr"]
    assert [r for res in report["results"] for r in res if "error" in r] == []
    with _open(team) as reg:
        _check_every_push_landed_once(reg, ckpts, tmp_path)
        result = reg.verify()
        assert (result.ok, result.problems) == (True, [])
        with reg.session() as session:
            shared_blobs = session.scalars(
                select(ComponentRow.blob_digest).join(VectorTensor).where(VectorTensor.name == "w0", ComponentRow.position == 0).distinct()
            ).all()
        assert len(shared_blobs) == 1  # 16 pushes of the shared tensor, one blob


def _age_everything(team: tuple[str, str], seconds: float) -> None:
    """Make every stored blob look ``seconds`` old (local folders only; S3 tests sleep instead)."""
    objects = Path(team[1]) / "objects"
    old = time.time() - seconds
    for path in objects.rglob("*"):
        if path.is_file():
            os.utime(path, (old, old))


def test_gc_racing_pushes_never_loses_a_committed_blob(team: tuple[str, str], ckpts: Checkpoints, tmp_path: Path) -> None:
    """Pushes re-put old unreferenced blobs (dedupe) and write new ones while gc loops sweep."""
    with _open(team) as reg:
        reg.add_base("base", ckpts.base)
        for name in ("ft0", "ft1", "ft2", "ft3", "ft4"):
            reg.push(f"old-{name}", ckpts.finetunes[name], base="base")
            reg.remove(f"old-{name}", all_versions=True)
        with reg.session() as session:
            garbage = set(reg.blobs.iter_digests()) - gc_module.referenced_digests(session)
    assert len(garbage) > 20  # every delta blob of five removed vectors (ft4's are never pushed again)
    if team[1].startswith("s3://"):
        time.sleep(GRACE_S + 1.5)
    else:
        _age_everything(team, 2 * GRACE_S)
    spec = {
        "database_url": team[0], "blob_url": team[1],
        "pushers": [_jobs(ckpts, p) for p in range(PROCESSES)],
        "gc": {"processes": 2, "grace": GRACE_S},
    }
    report = run_driver(spec, tmp_path / "driver")
    assert [p.get("exit") for p in report["pushers"]] == [0] * PROCESSES, report["stderr"]
    assert [r for res in report["results"] for r in res if "error" in r] == []
    assert report["gc"] == [{"exit": 0}, {"exit": 0}], report["stderr"]
    assert [g["errors"] for g in report["gc_results"]] == [[], []]
    assert all(g["runs"] >= 1 for g in report["gc_results"])
    swept = {d for g in report["gc_results"] for d in g["swept"]}
    with _open(team) as reg:
        _check_every_push_landed_once(reg, ckpts, tmp_path)
        result = reg.verify()
        assert (result.ok, result.problems) == (True, [])
        with reg.session() as session:
            used = gc_module.referenced_digests(session)
        assert swept  # the gc loops swept garbage while the pushes ran (some of it a push then wrote anew)
        final = set(reg.gc(grace_seconds=0).swept)
        assert set(reg.blobs.iter_digests()) == used
        assert garbage - used <= swept | final  # every leftover of the old vectors is gone now


# -- the claim protocol, step by step -------------------------------------------------


def _pause_after_first_call(module, name: str, during) -> None:  # noqa: ANN001
    """Run ``during()`` right after the first call of ``module.name`` returns (then restore it)."""
    original = getattr(module, name)

    def wrapped(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        result = original(*args, **kwargs)
        setattr(module, name, original)
        during()
        return result

    setattr(module, name, wrapped)


def test_a_re_put_between_gcs_age_check_and_delete_makes_the_push_fail_cleanly(
    team: tuple[str, str], ckpts: Checkpoints, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one gap the grace period leaves: gc checked the blob's age, then a push re-put it.

    gc holds the blob's claim from its age check to its delete, so the push's
    commit waits, then finds the blob gone and commits nothing; a retry works.
    """
    with _open(team) as reg:
        reg.add_base("base", ckpts.base)
        reg.push("old", ckpts.finetunes["ft0"], base="base")
        reg.remove("old", all_versions=True)
    if team[1].startswith("s3://"):
        time.sleep(2.5)
    else:
        _age_everything(team, 60)
    outcome: dict[str, object] = {}

    def push_now() -> None:
        with _open(team) as pusher:
            try:
                outcome["info"] = pusher.push("new", ckpts.finetunes["ft0"], base="base")
            except Exception as exc:  # noqa: BLE001 - inspected below
                outcome["error"] = exc

    thread = threading.Thread(target=push_now)
    committing = threading.Event()
    push_claim = record_module.claim_blobs

    def announce_then_claim(session, sizes):  # noqa: ANN001, ANN202 - the push's claim, which will wait
        committing.set()
        return push_claim(session, sizes)

    monkeypatch.setattr(record_module, "claim_blobs", announce_then_claim)

    def race() -> None:  # gc has just read an old age under its claim: the push re-puts and tries to commit
        thread.start()
        outcome["reached_commit"] = committing.wait(timeout=120)  # its blobs are (re-)put by now
        thread.join(timeout=1.0)  # and it waits on gc's claim
        outcome["blocked"] = thread.is_alive()

    with _open(team) as reg:
        blobs = reg.blobs
        modified = type(blobs).modified
        calls = {"n": 0}

        def modified_then_race(self, digest: str):  # noqa: ANN001, ANN202
            value = modified(self, digest)
            calls["n"] += 1
            if calls["n"] == 1 and threading.current_thread() is threading.main_thread() and "in_sweep" in calls:
                race()
            return value

        original_claim = gc_module.claim_blobs

        def claim(session, sizes):  # noqa: ANN001, ANN202
            original_claim(session, sizes)
            calls["in_sweep"] = True
            calls["n"] = 0

        monkeypatch.setattr(gc_module, "claim_blobs", claim)
        monkeypatch.setattr(type(blobs), "modified", modified_then_race)
        reg.gc(grace_seconds=1)
        thread.join(timeout=60)
        monkeypatch.undo()
        assert (outcome["reached_commit"], outcome["blocked"]) == (True, True)
        assert isinstance(outcome.get("error"), BlobVanishedError), outcome
        assert "removed from" in str(outcome["error"]) and "push again" in str(outcome["error"])
        assert reg.list() == []
        assert reg.verify().ok
        info = reg.push("new", ckpts.finetunes["ft0"], base="base")
        assert info.version == 1
        assert_rebuilds(reg, "new@1", ckpts.tensors("ft0"), tmp_path / "new")


def test_gc_waits_for_a_committing_push_and_keeps_its_blobs(
    team: tuple[str, str], ckpts: Checkpoints, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other order: the push holds its claims while gc (grace 0) tries to sweep the same blobs."""
    with _open(team) as reg:
        reg.add_base("base", ckpts.base)
    report: dict[str, object] = {}

    def gc_now() -> None:
        with _open(team) as collector:
            report["gc"] = collector.gc(grace_seconds=0)

    thread = threading.Thread(target=gc_now)

    def race() -> None:  # the push has claimed its blobs and checked them: gc starts and must wait
        thread.start()
        thread.join(timeout=3)
        report["blocked"] = thread.is_alive()

    _pause_after_first_call(record_module, "check_blobs_present", race)
    with _open(team) as reg:
        info = reg.push("kept", ckpts.finetunes["ft1"], base="base")
        thread.join(timeout=60)
        assert report["blocked"] is True
        assert info.version == 1
        assert report["gc"].swept == []
        assert reg.verify().ok
        assert_rebuilds(reg, "kept@1", ckpts.tensors("ft1"), tmp_path / "kept")


# -- base add under the same claims ----------------------------------------------------


def _base_blobs(reg: Registry, name: str) -> set[str]:
    with reg.session() as session:
        base = get_full_base(session, get_base(session, name).id)
        return {t.blob_digest for t in base.tensors} | {f.blob_digest for f in base.files}


def test_gc_between_base_adds_puts_and_commit_makes_it_fail_cleanly(
    team: tuple[str, str], ckpts: Checkpoints, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gc that sweeps a base's fresh, not yet referenced blobs (its age check came first) makes
    ``base add`` commit nothing instead of a base whose blobs are gone; a retry works."""
    store = bases_module.store_base

    def store_then_gc(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - gc lands between the puts and the commit
        stored = store(*args, **kwargs)
        with _open(team) as collector:
            swept = collector.gc(grace_seconds=0).swept
        assert {d for d, _ in stored[1]} <= set(swept)
        return stored

    monkeypatch.setattr(bases_module, "store_base", store_then_gc)
    with _open(team) as reg:
        with pytest.raises(BlobVanishedError, match=r"before this base add could commit; nothing was committed: run the base add again"):
            reg.add_base("base", ckpts.base)
        assert reg.bases() == []
        monkeypatch.undo()
        reg.add_base("base", ckpts.base)
        assert _base_blobs(reg, "base") <= set(reg.blobs.iter_digests())
        result = reg.verify()
        assert (result.ok, result.problems) == (True, [])


def test_gc_waits_for_a_committing_base_add_and_keeps_its_blobs(team: tuple[str, str], ckpts: Checkpoints) -> None:
    """The other order: ``base add`` holds its claims while gc (grace 0) tries to sweep its blobs."""
    report: dict[str, object] = {}

    def gc_now() -> None:
        with _open(team) as collector:
            report["gc"] = collector.gc(grace_seconds=0)

    thread = threading.Thread(target=gc_now)

    def race() -> None:  # base add has claimed its blobs: gc starts and must wait
        thread.start()
        thread.join(timeout=3)
        report["blocked"] = thread.is_alive()

    _pause_after_first_call(bases_module, "claim_blobs", race)
    with _open(team) as reg:
        reg.add_base("base", ckpts.base)
        thread.join(timeout=60)
        assert report["blocked"] is True
        assert report["gc"].swept == []
        assert _base_blobs(reg, "base") <= set(reg.blobs.iter_digests())
        assert reg.verify().ok


# -- no transaction held open during the long part ----------------------------------------


def test_push_and_base_add_hold_no_transaction_open_while_working(pg_url: str, tmp_path: Path, ckpts: Checkpoints) -> None:
    """PostgreSQL: while tensors are encoded and uploaded, none of our sessions is ``idle in transaction``
    (that would pin row versions and locks for minutes on a large model)."""
    app = f"tvstore-test-{uuid.uuid4().hex[:12]}"
    seen: list[str] = []
    watcher = create_engine(pg_url)

    @contextmanager
    def probe(description: str, total: int | None):  # noqa: ANN202 - a Progress that looks at the server
        def advance(n: int) -> None:
            with watcher.connect() as conn:
                states = conn.scalars(text("select state from pg_stat_activity where application_name = :app"), {"app": app})
                seen.extend(states)

        yield advance

    try:
        with Registry.open(database_url=f"{pg_url}&application_name={app}", blob_url=str(tmp_path / "blobs"), progress=probe) as reg:
            reg.init()
            reg.add_base("base", ckpts.base)
            reg.push("probed", ckpts.finetunes["ft0"], base="base")
            reg.push("probed", from_checkpoint=ckpts.finetunes["ft0"], to_checkpoint=ckpts.finetunes["ft1"], base="base")
    finally:
        watcher.dispose()
    assert len(seen) >= 3 * 10  # ten tensors each: every advance saw our pooled connection
    assert set(seen) == {"idle"}
