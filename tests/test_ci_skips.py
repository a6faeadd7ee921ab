"""CI refuses any skipped test: a skip hides a broken path (a missing peer, service or data package)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFUSE = ROOT / ".ci" / "refuse_skips"


def _pytest_log(tmp_path: Path, body: str) -> Path:
    """Run pytest as CI does (``-rfEs``) on a one-test module; return the log file."""
    (tmp_path / "test_one.py").write_text(body)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-rfEs", "-p", "no:cacheprovider", "-q", str(tmp_path / "test_one.py")],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
        env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},  # the installed plugins only cost start-up time
    )
    log = tmp_path / "pytest.log"
    log.write_text(done.stdout + done.stderr)
    return log


def test_a_skipped_import_fails_ci(tmp_path: Path) -> None:
    log = _pytest_log(tmp_path, "import pytest\npytest.importorskip('no_such_peer_module')\n\ndef test_x():\n    pass\n")
    done = subprocess.run([str(REFUSE), str(log)], capture_output=True, text=True)
    assert done.returncode == 1
    assert "no_such_peer_module" in done.stdout  # the skip line itself is shown
    assert done.stderr == "error: CI: 1 skip line(s) above; every test must run in CI\n"


def test_a_run_without_skips_passes(tmp_path: Path) -> None:
    log = _pytest_log(tmp_path, "def test_x():\n    assert 1 + 1 == 2\n")
    done = subprocess.run([str(REFUSE), str(log)], capture_output=True, text=True)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
