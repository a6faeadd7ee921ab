"""What a command loads before it works: every CLI process pays for its imports.

A pull's time is mostly start-up (``benchmarks/results/rebuild.md``), so the
modules only some commands need stay out of the others: Alembic is imported
only for a schema that is not current, the merge machinery only for a merge,
the HTTP client and server only for a remote or ``serve``. Checked through
the installed ``tvstore`` command, with Python's own import trace. (pydantic
is not on the list: typer imports it for its own use whenever it is installed.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import tvstore_executable

#: modules a pull of a stored vector has no use for
NOT_FOR_A_PULL = ("alembic", "tvstore.merge", "httpx", "fastapi")


def imported_by(cli, *args: str) -> set[str]:
    """Every module the ``tvstore`` command imports for ``args`` (``python -X importtime``), after it succeeds."""
    proc = subprocess.run([sys.executable, "-X", "importtime", tvstore_executable(), *args], env=cli.env,
                          cwd=cli.cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line.split("|") for line in proc.stderr.splitlines() if line.startswith("import time:")]
    return {cols[-1].strip() for cols in lines[1:]}


def unwanted(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in NOT_FOR_A_PULL))


def pushed(registry, tiny, *names: str) -> None:
    """The tiny base and these of its fine-tunes, pushed lossless through the API (only the probed command is a
    process: the setup's own imports are not what these tests read)."""
    registry.add_base("bert", tiny.base)
    for name in names:
        registry.push(name, tiny.finetunes[name], base="bert")


def test_pulling_a_stored_vector_imports_no_migration_or_merge_machinery(cli, registry, tiny, tmp_path: Path) -> None:
    pushed(registry, tiny, "alpha")
    modules = imported_by(cli, "pull", "alpha", "--checkpoint", "--out", str(tmp_path / "rebuilt"))
    assert (tmp_path / "rebuilt" / "model.safetensors").is_file()
    assert "torch" in modules and "sqlalchemy" in modules  # the trace is read right
    assert unwanted(modules) == []
    assert unwanted(imported_by(cli, "ls")) == []


def test_a_recipe_still_gets_its_machinery(cli, registry, tiny, tmp_path: Path) -> None:
    """The lazy imports are where the recipe path needs them: a merge saved as its recipe pulls."""
    pushed(registry, tiny, "alpha", "beta")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("merge_method: task_arithmetic\nmodels:\n  - model: alpha\n    parameters: {weight: 0.5}\n"
                      "  - model: beta\n    parameters: {weight: 0.5}\n")
    registry.save_merge("both", recipe)
    modules = imported_by(cli, "pull", "both", "--checkpoint", "--out", str(tmp_path / "merged"))
    assert (tmp_path / "merged" / "model.safetensors").is_file()
    assert "tvstore.merge" in modules and "alembic" not in modules


def test_a_pull_pays_no_full_garbage_collection(cli, registry, tiny, tmp_path: Path) -> None:
    """Each full collection scans every imported object; a short command needs none of them."""
    pushed(registry, tiny, "alpha")
    probe = ("import gc, sys; from tvstore.cli.app import run; full = []; "  # counted from the command's start on
             "gc.callbacks.append(lambda phase, info: full.append(1) if phase == 'start' and info['generation'] == 2 "
             "else None); "
             f"sys.argv = ['tvstore', 'pull', 'alpha', '--checkpoint', '--out', {str(tmp_path / 'out')!r}]; "
             "status = run(); print('full collections', len(full)); sys.exit(status)")
    proc = subprocess.run([sys.executable, "-c", probe], env=cli.env, cwd=cli.cwd, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[-1] == "full collections 0"
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_leaving_without_finalization_keeps_output_and_exit_codes(cli, registry, tiny, tmp_path: Path) -> None:
    """``leave`` skips the interpreter's teardown: what it must still do is flush, exit right and close."""
    pushed(registry, tiny, "alpha")
    listed = cli("ls", "--json")  # output to a pipe arrives whole
    assert [v["name"] for v in json.loads(listed.stdout)] == ["alpha"]
    assert cli("pull", "nothing", "--out", tmp_path / "x", expect=1).stderr == "error: no task vector named 'nothing'\n"
    assert cli("pull", "--no-such-option", expect=2).stderr.startswith("Usage: tvstore pull")
    # a reader that goes away early (`tvstore show alpha --tensors | head -c 1`) is not an error of ours
    shown = subprocess.run(f"{tvstore_executable()} show alpha --tensors | head -c 1", shell=True, env=cli.env,
                           cwd=cli.cwd, capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0 and len(shown.stdout) == 1 and "Traceback" not in shown.stderr
    # output that cannot be written is an error: one line, status 1 (a long table, a short JSON list), with
    # nothing of the interpreter's own exit-time flush warning
    for command in ("show alpha --tensors", "ls --json"):
        full = subprocess.run(f"{tvstore_executable()} {command} > /dev/full", shell=True, env=cli.env, cwd=cli.cwd,
                              capture_output=True, text=True, timeout=300)
        assert (full.returncode, full.stderr) == (1, "error: no space left on device\n"), command


def test_a_command_closes_its_database_connections(pg_url: str, tmp_path: Path) -> None:
    """The root context closes the registry before ``leave``: no pooled connection outlives the command.

    Counted from inside the command's process once the command has run, so a connection the OS would close at
    exit is still seen."""
    probe = ("import sys; from sqlalchemy import create_engine, text; from tvstore.cli.app import run; "
             "sys.argv = ['tvstore', 'init']; status = run(); "
             f"checker = create_engine({pg_url!r}, connect_args={{'application_name': 'checker'}}); "
             "conn = checker.connect(); "
             "print(conn.execute(text(\"SELECT count(*) FROM pg_stat_activity WHERE application_name = 'leave-probe'\")).scalar()); "
             "conn.close(); checker.dispose(); sys.exit(status)")
    # PostgreSQL only (so not through the ``cli`` fixture, which would run it once more per database)
    env = {**os.environ, "TVSTORE_DATABASE_URL": pg_url, "TVSTORE_BLOB_URL": str(tmp_path / "blobs"),
           "PGAPPNAME": "leave-probe"}
    env.pop("TVSTORE_HOME", None)
    proc = subprocess.run([sys.executable, "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[-1] == "0"
