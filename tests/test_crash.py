"""SIGKILL a push anywhere: the registry stays consistent and a retried push succeeds.

Each kill point is a real process killed with SIGKILL (``push_driver.py``
forks the pushers after one import of tvstore). Most points are random
delays after the start line, spread uniformly over a calibrated push's
duration, so they land during blob writes, between the blobs and the
commit, and during the commit; a few are deterministic (see
``push_driver.install_hook``): before the first/middle/last blob put, with a blob
in its temporary file, with the blob rows claimed, with the vector rows
flushed, at the COMMIT call, and just after it. Pushers run in waves of
``WAVE`` at once, all pushing the same name, so versions contend too.

The random points use ``TVSTORE_CRASH_SEED`` if set (every failure message
names the seed to replay).
"""

from __future__ import annotations

import os
import random
from collections import Counter
import time
from pathlib import Path

import pytest

from s3_server import s3_bucket, s3_env, s3_server  # noqa: F401 - fixtures
from push_driver import phase
from team_helpers import TENSORS, Checkpoints, assert_rebuilds, make_checkpoints, run_driver
from tvstore import Registry

WAVE = 6
RANDOM_KILLS = 66
#: random kill delays are uniform in [0, SPREAD x the calibrated wave duration]: pushes in a
#: killed wave run faster than the calibration wave (fewer processes share the CPU as they die)
SPREAD = 0.7
#: deterministic kill points, and whether the vector must be committed afterwards
FIXED_POINTS = {
    "put:1": False,
    f"put:{TENSORS // 2}": False,
    f"put:{TENSORS}": False,
    "rename:1": False,  # local store only: S3 has no temporary files
    f"rename:{TENSORS // 2}": False,
    "encoded": False,
    "claimed": False,
    "flushed": False,
    "commit": False,
    "committed": True,
}
NAME = "crashy"
MIN_KILLS = 50
#: extra rounds of earlier kills if too many pushes finished before their kill time
TOP_UPS = 2
CHECKPOINTS = WAVE + len(FIXED_POINTS) + RANDOM_KILLS + 2 * MIN_KILLS


@pytest.fixture(params=["sqlite-local", "postgres-s3"])
def team(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    if request.param == "sqlite-local":
        urls = (f"sqlite:///{tmp_path / 'registry.db'}", str(tmp_path / "blobs"))
    else:
        urls = (request.getfixturevalue("pg_url"), f"s3://{request.getfixturevalue('s3_bucket')}/crash")
    return urls


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> Checkpoints:
    """One fine-tune per pusher, so every killed push really writes new blobs (beside shared ones)."""
    return make_checkpoints(tmp_path_factory.mktemp("ckpts"), count=CHECKPOINTS)


def _job(ckpts: Checkpoints, i: int) -> list[dict]:
    ft = f"ft{i}"
    return [{"name": NAME, "path": str(ckpts.finetunes[ft]), "base": "base", "meta": {"pusher": i, "ckpt": ft}}]


def _calibrate(team: tuple[str, str], ckpts: Checkpoints, workdir: Path) -> float:
    """Seconds a wave of unkilled pushes takes from the start line (they become versions 1..WAVE)."""
    spec = {"database_url": team[0], "blob_url": team[1], "pushers": [_job(ckpts, i) for i in range(WAVE)]}
    report = run_driver(spec, workdir)
    assert [p.get("exit") for p in report["pushers"]] == [0] * WAVE, report["stderr"]
    return max(p["elapsed"] for p in report["pushers"])


def _kill_plan(seed: int, duration: float, local: bool) -> list[dict]:
    rng = random.Random(seed)
    plan = [{"at": point} for point in FIXED_POINTS if local or not point.startswith("rename")]
    plan += [{"delay": rng.uniform(0.0, SPREAD * duration)} for _ in range(RANDOM_KILLS)]
    rng.shuffle(plan)
    return plan


def _kill_round(team: tuple[str, str], ckpts: Checkpoints, first: int, plan: list[dict], workdir: Path) -> list[dict]:
    """Push ``len(plan)`` fine-tunes (pusher ids from ``first``) in waves, killing each per ``plan``."""
    spec = {
        "database_url": team[0], "blob_url": team[1],
        "pushers": [_job(ckpts, first + i) for i in range(len(plan))],
        "kills": plan,
        "waves": [list(range(start, min(start + WAVE, len(plan)))) for start in range(0, len(plan), WAVE)],
        "settle": 0.3,
    }
    report = run_driver(spec, workdir, timeout=400)
    assert all(o.get("signal") == 9 or o.get("exit") == 0 for o in report["pushers"]), report["stderr"][-3000:]
    return [
        {"pusher": first + i, "kill": kill, "outcome": outcome, "phase": phase(trace)}
        for i, (kill, outcome, trace) in enumerate(zip(plan, report["pushers"], report["traces"]))
    ]


def test_sigkill_at_many_points_leaves_a_consistent_registry(team: tuple[str, str], ckpts: Checkpoints, tmp_path: Path) -> None:
    seed = int(os.environ.get("TVSTORE_CRASH_SEED") or time.time())
    with Registry.open(database_url=team[0], blob_url=team[1]) as reg:
        reg.init()
        reg.add_base("base", ckpts.base)
    duration = _calibrate(team, ckpts, tmp_path / "calibrate")
    where = f"(seed {seed}, push duration {duration:.3f}s)"
    runs = _kill_round(team, ckpts, WAVE, _kill_plan(seed, duration, local=not team[1].startswith("s3://")), tmp_path / "kills")
    for extra in range(TOP_UPS):  # pushes ran faster than calibrated: kill more, earlier
        short = MIN_KILLS - sum(r["outcome"].get("signal") == 9 for r in runs)
        if short <= 0:
            break
        rng = random.Random(seed + extra + 1)
        plan = [{"delay": rng.uniform(0.0, 0.4 * duration)} for _ in range(2 * short)]
        runs += _kill_round(team, ckpts, WAVE + len(runs), plan, tmp_path / f"top-up-{extra}")
    killed = [r for r in runs if r["outcome"].get("signal") == 9]
    unreached = [r["kill"]["at"] for r in runs if "at" in r["kill"] and r not in killed]
    assert unreached == [], where  # every deterministic point was reached
    offset = WAVE  # pusher ids after the calibration wave's

    with Registry.open(database_url=team[0], blob_url=team[1]) as reg:
        result = reg.verify()
        assert (result.ok, result.problems) == (True, []), where
        stored = reg.list(NAME, all_versions=True)
        assert [v.version for v in stored] == list(range(1, len(stored) + 1)), where
        pushers = sorted(v.meta["pusher"] for v in stored)
        assert len(pushers) == len(set(pushers)), where  # no push landed twice
        landed = {p for p in pushers if p >= offset}
        for r in runs:
            if "at" in r["kill"]:
                assert (r["pusher"] in landed) == FIXED_POINTS[r["kill"]["at"]], (r["kill"], where)
        finished = {r["pusher"] for r in runs if r["outcome"].get("exit") == 0}
        assert finished <= landed, where  # a push that returned is committed
        for v in stored:
            assert_rebuilds(reg, f"{NAME}@{v.version}", ckpts.tensors(v.meta["ckpt"]), tmp_path / f"v{v.version}")

        retried = [reg.push(NAME, ckpts.finetunes[f"ft{k}"], base="base") for k in range(offset, offset + 4)]
        assert [r.version for r in retried] == list(range(len(stored) + 1, len(stored) + 5))
        local = not team[1].startswith("s3://")
        leftovers = len(list(Path(team[1], "objects").glob("*/.*.tmp"))) if local else 0
        assert leftovers >= (2 if local else 0), where  # at least the two `rename` points left a temporary file
        collected = reg.gc(grace_seconds=0)  # sweep what the killed pushes left behind
        assert collected.temporaries == leftovers, where
        assert collected.swept, where  # blobs written by pushes that never committed
        if local:
            assert list(Path(team[1], "objects").glob("*/.*.tmp")) == []
        result = reg.verify()
        assert (result.ok, result.problems) == (True, []), where
        for k, r in enumerate(retried, start=offset):
            assert_rebuilds(reg, f"{NAME}@{r.version}", ckpts.tensors(f"ft{k}"), tmp_path / f"retry{k}")
    phases = Counter(r["phase"] for r in killed)
    print(f"\n{len(killed)} pushes killed {dict(phases)}, {len(landed)} of {len(runs)} landed {where}")
    assert len(killed) >= MIN_KILLS, (phases, where)
    for needed in ("blob writes", "between blobs and commit", "commit transaction", "after commit"):
        assert phases[needed] >= 1, (needed, phases, where)
