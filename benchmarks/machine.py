"""What every results table states: machine, load before/after, commit, library versions.

Timings on a shared box swing with other people's jobs, so each table carries
the load average taken before and after its run; ratios measured side by side
are what to compare across machines.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _commit() -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "tvstore"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + (" (tvstore/ modified)" if dirty else "")


def snapshot() -> dict:
    """Taken at the start of a benchmark: the load, and the commit whose code is about to run.

    The commit is read here, not at the end: a run of hours (``make eval``)
    keeps running the code it started with while the checkout moves on.
    """
    return {"load_before": os.getloadavg(), "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "commit": _commit()}


def finish(before: dict) -> dict:
    """The machine record of a run started with :func:`snapshot`."""
    import torch

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {**before, "load_after": os.getloadavg(), "cores": os.cpu_count(), "cpu": _cpu_model(),
            "memory_gib": round(mem / 2**30, 1), "python": platform.python_version(), "torch": torch.__version__}


def describe(m: dict) -> str:
    """One paragraph for the top of a markdown table."""
    load = lambda xs: "/".join(f"{x:.1f}" for x in xs)  # noqa: E731
    return (f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB RAM, Python {m['python']}, "
            f"torch {m['torch']}. Load average (1/5/15 min) before {load(m['load_before'])}, after "
            f"{load(m['load_after'])}. Commit {m['commit']}; started {m['started']}.")
