"""The wheel carries the CLI and migrations inside ``tvstore``, and nothing at top level but it."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_layout(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = tmp_path.glob("tvstore-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"tvstore", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}
    for required in (
        "tvstore/cli/app.py",
        "tvstore/migrations/env.py",
        "tvstore/migrations/script.py.mako",
        "tvstore/migrations/versions/0001_initial_schema.py",
        "tvstore/registry.py",
    ):
        assert required in names, required
    # every module of the library's source tree ships (a new sub-package must be listed in pyproject)
    source = {f"tvstore/{p.relative_to(ROOT / 'tvstore').as_posix()}" for p in (ROOT / "tvstore").rglob("*.py")}
    assert source - set(names) == set()
    entry_points = zipfile.ZipFile(wheel).read(f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info/entry_points.txt").decode()
    assert "tvstore = tvstore.cli.app:main" in entry_points
