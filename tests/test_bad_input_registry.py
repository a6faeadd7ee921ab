"""Bad databases, folders and files, met through the installed CLI: one line, the right exit code, nothing written.

Tests run as root, and root ignores file permissions; the read-only cases run
the CLI with the capabilities that let root do so (CAP_DAC_OVERRIDE,
CAP_DAC_READ_SEARCH, CAP_FOWNER) dropped, so the kernel holds it to the mode
bits as it would an ordinary user on a read-only mount.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from sqlalchemy import inspect, text

from conftest import tvstore_executable

NO_ROOT_POWERS = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]
RECIPE = "method: task_arithmetic\ninputs:\n  - {ref: good, weight: 0.5}\n"


@pytest.fixture
def ready(cli, registry, tiny):
    """A registry holding one base and one vector (set up through the API, probed through the CLI)."""
    registry.add_base("bert", tiny.base)
    registry.push("good", tiny.finetunes["alpha"], base="bert")
    cli.registry = registry
    return cli


def run(cli, *args: str, powers: bool = True, umask: int | None = None) -> subprocess.CompletedProcess[str]:
    """``tvstore ARGS`` with ``cli``'s registry, optionally without root's permission overrides or with a umask."""
    cmd = ([] if powers else NO_ROOT_POWERS) + [tvstore_executable(), *map(str, args)]
    preexec = None if umask is None else (lambda: os.umask(umask))
    return subprocess.run(cmd, env=cli.env, cwd=cli.cwd, capture_output=True, text=True, timeout=300, preexec_fn=preexec)


def assert_fails(proc: subprocess.CompletedProcess[str], code: int, message: str) -> None:
    assert (proc.returncode, proc.stderr) == (code, f"error: {message}\n"), proc.stdout


def tree(folder: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under ``folder``: mode, size and content hash (what "nothing written" compares)."""
    return {
        str(p.relative_to(folder)): (p.stat().st_mode, p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(folder.rglob("*")) if p.is_file()
    }


# ---- output folders -----------------------------------------------------------------------


@pytest.mark.parametrize("checkpoint", [False, True], ids=["vector", "checkpoint"])
def test_pull_under_a_file_names_it(ready, tmp_path: Path, checkpoint: bool) -> None:
    (tmp_path / "afile").write_text("mine")
    out = "afile/x.safetensors" if not checkpoint else "afile/rebuilt"
    proc = ready("pull", "good", "--out", out, *(["--checkpoint"] if checkpoint else []), check=False)
    assert_fails(proc, 2, "cannot create output folder afile: afile is a file, not a folder")
    assert (tmp_path / "afile").read_text() == "mine"


@pytest.mark.parametrize("command", ["pull", "pull --checkpoint", "merge"])
def test_read_only_output_folder_is_named(ready, tmp_path: Path, command: str) -> None:
    (tmp_path / "r.yml").write_text(RECIPE)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    args = {
        "pull": ["pull", "good", "--out", "locked/x.safetensors"],
        "pull --checkpoint": ["pull", "good", "--checkpoint", "--out", "locked/x"],
        "merge": ["merge", "--recipe", "r.yml", "--out", "locked/merged"],
    }[command]
    assert_fails(run(ready, *args, powers=False), 1, "cannot write into output folder locked: permission denied")
    assert list(locked.iterdir()) == []


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_output_follows_the_umask(ready, tmp_path: Path, mask: int) -> None:
    (tmp_path / "r.yml").write_text(RECIPE)
    run(ready, "pull", "good", "--checkpoint", "--out", "deep/rebuilt", umask=mask).check_returncode()
    run(ready, "merge", "--recipe", "r.yml", "--out", "merged", umask=mask).check_returncode()
    run(ready, "pull", "good", "--out", "tau.safetensors", umask=mask).check_returncode()
    made = [tmp_path / p for p in ("deep", "deep/rebuilt", "merged", "tau.safetensors")]
    made += [*(tmp_path / "deep/rebuilt").iterdir(), *(tmp_path / "merged").iterdir()]
    modes = {str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode)) for p in made}
    assert modes == {
        k: oct((0o777 if (tmp_path / k).is_dir() else 0o666) & ~mask) for k in modes
    } and len(modes) == 4 + 2 * 4  # model.safetensors, config.json, tokenizer_config.json, README.md each


# ---- recipe and home --------------------------------------------------------------------------


def test_recipe_with_bytes_that_are_not_utf8(ready, tmp_path: Path) -> None:
    (tmp_path / "bad.yml").write_bytes(b"method: task_arithmetic\n\xff\xfe: x\n")
    before = [v.to_dict() for v in ready.registry.list(all_versions=True)]
    proc = ready("merge", "--recipe", "bad.yml", "--save-as", "blend", check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: recipe bad.yml is not UTF-8 text")
    assert proc.stderr.count("\n") == 1
    assert [v.to_dict() for v in ready.registry.list(all_versions=True)] == before


def test_home_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("mine")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TVSTORE_")}
    proc = subprocess.run([tvstore_executable(), "--home", "afile/sub", "init"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    home = tmp_path / "afile"
    assert_fails(proc, 2, f"cannot create registry home {home}/sub: {home} is a file, not a folder")
    assert sorted(os.listdir(tmp_path)) == ["afile"] and home.read_text() == "mine"


def test_unreachable_postgresql(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TVSTORE_")}
    url = "postgresql://postgres@127.0.0.1:1/test"
    proc = subprocess.run([tvstore_executable(), "--database-url", url, "--blob-url", "blobs", "init"], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert_fails(proc, 1, 'cannot connect to database postgresql+psycopg://postgres@127.0.0.1:1/test: connection '
                          'failed: connection to server at "127.0.0.1", port 1 failed: Connection refused')
    assert os.listdir(tmp_path) == []


# ---- schema revisions -------------------------------------------------------------------------


def _tables(registry) -> list[str]:
    with registry.engine.connect() as conn:
        return sorted(inspect(conn).get_table_names())


def test_schema_of_a_newer_tvstore(ready) -> None:
    with ready.registry.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    newer = "database schema is at revision 9999, made by a newer tvstore (this one knows up to 0004): upgrade tvstore"
    for args in (["init"], ["db", "upgrade"], ["ls"]):
        assert_fails(ready(*args, check=False), 1, newer)
    assert ready("db", "current").stdout == f"current 9999 (head 0004): {newer}\n"
    with ready.registry.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "9999"


def test_tables_without_alembic_version(ready) -> None:
    with ready.registry.engine.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
    tables = _tables(ready.registry)
    proc = ready("init", check=False)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"error: database {ready.registry.engine.url!r} is not a tvstore registry: it has tables (")
    assert proc.stderr.endswith("but no schema revision (no alembic_version table); left untouched\n")
    assert _tables(ready.registry) == tables


# ---- a corrupt SQLite file --------------------------------------------------------------------


def _random_bytes(data: bytes) -> bytes:
    return hashlib.sha256(b"seed").digest() * (len(data) // 32)


def _junk_at_offset(data: bytes) -> bytes:
    return data[:40_000] + b"JUNK" * 1000 + data[44_000:]


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 3]


@pytest.fixture
def sqlite_ready(tmp_path: Path, tiny):
    """A CLI on a SQLite registry in ``tmp_path/home`` holding one base and one vector, engine closed."""
    from conftest import Cli
    from tvstore import Registry

    home = tmp_path / "home"
    with Registry.open(home) as reg:
        reg.init()
        reg.add_base("bert", tiny.base)
        reg.push("good", tiny.finetunes["alpha"], base="bert")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TVSTORE_")}
    return Cli({**env, "TVSTORE_HOME": str(home)}, tmp_path), home


@pytest.mark.parametrize("damage", [_random_bytes, _junk_at_offset, _truncated], ids=["random", "junk", "truncated"])
def test_corrupt_database_is_named_and_never_ready(sqlite_ready, damage) -> None:
    cli, home = sqlite_ready
    db = home / "registry.db"
    db.write_bytes(damage(db.read_bytes()))
    before = tree(home)
    commands = [["init"], ["db", "upgrade"]] + ([] if damage is _junk_at_offset else [["ls"], ["show", "good"]])
    for args in commands:
        proc = cli(*args, check=False)
        assert proc.returncode == 1 and proc.stdout == "", (args, proc.stdout)
        assert proc.stderr.startswith(f"error: registry database {db} is corrupt (") and proc.stderr.count("\n") == 1
        assert proc.stderr.endswith("): restore it from a backup\n")
    assert tree(home) == before


# ---- a read-only registry ---------------------------------------------------------------------


def test_read_only_registry_serves_reads(sqlite_ready, tmp_path: Path, tiny) -> None:
    cli, home = sqlite_ready
    (tmp_path / "out").mkdir()
    for path in [home, *home.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    before = tree(home)
    listed = run(cli, "ls", "--json", powers=False)
    assert listed.returncode == 0, listed.stderr
    assert '"ref": "good@1"' in listed.stdout
    assert '"ref": "good@1"' in run(cli, "show", "good", "--json", powers=False).stdout
    for args in (["pull", "good", "--out", "out/tau.safetensors"], ["pull", "good", "--checkpoint", "--out", "out/ft"]):
        proc = run(cli, *args, powers=False)
        assert proc.returncode == 0, proc.stderr
    rebuilt, original = load_file(tmp_path / "out/ft/model.safetensors"), tiny.tensors(tiny.finetunes["alpha"])
    assert rebuilt.keys() == original.keys() and all(torch.equal(rebuilt[k], original[k]) for k in original)
    proc = run(cli, "tag", "good@1", "stable", powers=False)
    assert_fails(proc, 1, f"registry database {home / 'registry.db'} is read-only: this command writes, run it where the registry is writable")
    push = run(cli, "push", "more", tiny.finetunes["beta"], "--base", "bert", powers=False)
    assert push.returncode == 1 and push.stderr.count("\n") == 1  # the blob store refuses first, named
    assert push.stderr.startswith(f"error: {home / 'blobs'}/") and push.stderr.endswith(": permission denied\n")
    assert tree(home) == before and sorted(os.listdir(home)) == ["blobs", "registry.db"]


def test_server_restart_is_not_an_error(pg_url: str, tmp_path: Path) -> None:
    """A pooled connection the server dropped is replaced by the pool's ping, not reported as unreachable."""
    from conftest import _pg_engine
    from tvstore import Registry

    with Registry.open(database_url=pg_url, blob_url=str(tmp_path / "blobs")) as reg:
        reg.init()
        with reg.engine.connect() as conn:
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        admin = _pg_engine()
        with admin.connect() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar_one()
        admin.dispose()
        assert reg.list() == []


def test_a_pooled_connection_failing_its_ping_in_any_way_is_replaced(pg_url: str, tmp_path: Path) -> None:
    """psycopg may report a backend that died during the pool's ping as a ProgrammingError (the ping cannot put
    autocommit back), not as a disconnect; the pool must still replace the connection, not fail the command."""
    from tvstore import Registry

    with Registry.open(database_url=pg_url, blob_url=str(tmp_path / "blobs")) as reg:
        reg.init()
        with reg.engine.connect() as conn:
            pooled = conn.connection.dbapi_connection
            old_pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        pooled.execute("SELECT 1")  # back in the pool, now inside a transaction: the ping's autocommit switch fails
        with reg.engine.connect() as conn:
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() != old_pid
        assert reg.list() == []
