"""The demo only ever touches its own ``.demo/`` folder, whatever registry the user exported."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

DEMO = Path(__file__).resolve().parent.parent / "demo"


def test_demo_keeps_the_users_registry(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(DEMO, repo / "demo")
    stale = repo / ".demo" / "registry"
    stale.mkdir(parents=True)
    (stale / "registry.db").write_bytes(b"last demo run")
    users = tmp_path / "my-registry"
    users.mkdir()
    (users / "registry.db").write_bytes(b"precious")
    env = {
        **os.environ,
        "TVSTORE_HOME": str(users),
        "TVSTORE_DATABASE_URL": f"sqlite:///{users / 'registry.db'}",
        "TVSTORE_BLOB_URL": str(users / "blobs"),
    }
    script = 'set -euo pipefail; source demo/env.sh; echo "$TVSTORE_HOME|${TVSTORE_DATABASE_URL-unset}|${TVSTORE_BLOB_URL-unset}"'
    proc = subprocess.run(["bash", "-c", script], cwd=repo, env=env, capture_output=True, text=True, check=True)
    assert proc.stdout == f"{repo / '.demo' / 'registry'}|unset|unset\n"
    assert (users / "registry.db").read_bytes() == b"precious"
    assert sorted(p.name for p in users.iterdir()) == ["registry.db"]
    assert not stale.exists()  # the demo's own previous registry is what gets cleared
