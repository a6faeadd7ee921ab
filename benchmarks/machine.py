"""What every results table states: machine, load before/after, commit, library versions.

Timings on a shared box swing with other people's jobs, so each table carries
the load average taken before and after its run; ratios measured side by side
are what to compare across machines.

A virtual machine can swing for another reason: its host backs guest memory
lazily (and, with the balloon driver's free page reporting, may take back
pages the guest frees), so the first touch of such a page costs a trip to the
hypervisor. On this project's VMs, in an ad-hoc probe, a new process filled
fresh memory at 0.35-0.7 GB/s shortly after boot and at ~2.5 GB/s once the
guest had touched its memory; a rebuild allocates its output, so its time
depended on how long the machine had been up. A benchmark therefore settles
the machine first (:func:`settle_memory`: one child touches half the
available memory once, as a machine in use has) and records the speed of
fresh memory before and after, so each table says which state it saw.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
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


_FILL_PROBE = """
import time
t = time.perf_counter(); b = bytearray({n}); s = time.perf_counter() - t
print({n} / s / 1e9)
"""

_TOUCH_FREE = """
chunks = [bytearray(1 << 28) for _ in range({count})]
"""


def fresh_memory_gbps(mib: int = 256, runs: int = 3) -> float:
    """GB/s at which a new process fills ``mib`` MiB of memory it just asked for (median of ``runs`` processes)."""
    code = _FILL_PROBE.format(n=mib << 20)
    speeds = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
              for _ in range(runs)]
    return statistics.median(speeds)


def _available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def settle_memory(share: float = 0.5) -> None:
    """Touch ``share`` of the available memory once, in a child that then exits (page cache it evicts refills)."""
    count = int(_available_bytes() * share) >> 28
    if count:
        subprocess.run([sys.executable, "-c", _TOUCH_FREE.format(count=count)], check=True)


def snapshot(settle: bool = False) -> dict:
    """Taken at the start of a benchmark: the load, the commit about to run, and fresh memory's speed.

    The commit is read here, not at the end: a run of hours (``make eval``)
    keeps running the code it started with while the checkout moves on.
    ``settle`` runs :func:`settle_memory` first, recording fresh memory's
    speed before and after it.
    """
    memory = {"fresh_gbps_before_settling": fresh_memory_gbps()} if settle else {}
    if settle:
        settle_memory()
    memory["fresh_gbps"] = fresh_memory_gbps()
    return {"load_before": os.getloadavg(), "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "commit": _commit(), "memory": memory}


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
            f"{load(m['load_after'])}.{_memory_text(m.get('memory'))} Commit {m['commit']}; started {m['started']}.")


def _memory_text(memory: dict | None) -> str:
    """Fresh memory's speed as a run recorded it (runs before this was measured recorded none)."""
    if not memory:
        return ""
    text = f" A new process filled fresh memory at {memory['fresh_gbps']:.2f} GB/s"
    if "fresh_gbps_before_settling" in memory:
        text += f" after the machine was settled ({memory['fresh_gbps_before_settling']:.2f} GB/s before)"
    return text + "."
