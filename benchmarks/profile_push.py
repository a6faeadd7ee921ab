"""Profile one push (issue 10's push side): where the time and the memory of ``Registry.push`` go.

Generates bench_rebuild's Llama-shaped bf16 model (base + one fine-tune,
cached in ``WORK/models``), a SQLite registry holding the base (cached in
``WORK/home``), then pushes the fine-tune once per codec, each push in a
fresh process into a fresh copy of that registry (blobs hard-linked, so the
push's own blobs are all new and written, as a first push's are) (imports done before the clock starts). Prints, per codec,
wall seconds, MB/s of bf16 input (and per core) and the peak anonymous memory
above the process's start as a multiple of the largest tensor, the figures
bench_rebuild reports; with ``--profile DIR`` each child instead pushes on
one thread (cProfile sees only the thread it runs in), writes a cProfile file
``DIR/<codec>.prof`` and prints its top functions to stderr.

    python benchmarks/profile_push.py --work /tmp/tvpush                       # 168M, lossless + quant:bits=4
    python benchmarks/profile_push.py --work /tmp/tvpush --profile /tmp/prof  # with cProfile
    python benchmarks/profile_push.py --work /tmp/tvpush --size quick          # seconds
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import uuid
from pathlib import Path

import bench_merge as bm  # noqa: E402  (this folder is on sys.path when run as a script)
import bench_rebuild as br  # noqa: E402

CODECS = ["lossless", "quant:bits=4"]


def prepare(work: Path, size: str) -> tuple[Path, Path]:
    """(fine-tune path, registry home): the models and the base's registry, made once per ``work``."""
    cfg = bm.llama_config(*br.SIZES[size])
    models = work / "models"
    for name, seed in (("base", None), ("ft0", 0)):
        if not (models / name / ".complete").exists():
            shutil.rmtree(models / name, ignore_errors=True)
            br.write_model(models / name, cfg, seed)
            (models / name / ".complete").touch()
    home = work / "home"
    if not (home / ".ready").exists():
        shutil.rmtree(home, ignore_errors=True)
        with bm.open_registry(str(home)) as reg:
            reg.init()
            reg.add_base("base", models / "base")
        (home / ".ready").touch()
    return models / "ft0", home


def fresh_copy(home: Path, run: Path) -> Path:
    """The base's registry, copied with its blobs hard-linked: each push writes every blob of its own."""
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(home, run, copy_function=os.link, ignore=shutil.ignore_patterns("registry.db*"))
    shutil.copy2(home / "registry.db", run / "registry.db")  # the database is written: a copy, not a link
    return run


def child_push(home: str, path: str, codec: str, profile: str) -> None:
    """One push, timed (and profiled when ``profile`` names a file)."""
    import cProfile
    import pstats

    import torch

    import tvstore.ops.push
    import tvstore.registry  # noqa: F401  (imports are start-up, not push work)

    if profile:  # cProfile sees one thread only: the profiled push runs its tensors on this one,
        tvstore.ops.push.push_workers = lambda: 1
        torch.set_num_threads(1)  # single-threaded ops, as in the push's own workers

    start_anon = bm.rss_anon_mib()
    prof = cProfile.Profile() if profile else None
    t0 = bm.child_start()
    with bm.open_registry(home) as reg:
        if prof:
            prof.enable()
        reg.push(f"profile-{uuid.uuid4().hex[:8]}", Path(path), base="base", codec=codec)
        if prof:
            prof.disable()
    if prof:
        prof.dump_stats(profile)
        pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    print(json.dumps({"start_anon_mib": start_anon}))
    bm.child_report(t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--size", choices=sorted(br.SIZES), default="168M")
    p.add_argument("--codec", action="append", help=f"codec spec (repeatable; default {' and '.join(CODECS)})")
    p.add_argument("--profile", type=Path, help="folder for one cProfile file per codec")
    a = p.parse_args()
    ft, home = prepare(a.work, a.size)
    cfg = bm.llama_config(*br.SIZES[a.size])
    nbytes = sum(2 * _numel(s) for _, s in bm.llama_shapes(cfg))
    largest = max(2 * _numel(s) for _, s in bm.llama_shapes(cfg)) / 2**20
    cores = min(2, os.cpu_count() or 1)
    print(f"load {os.getloadavg()[0]:.2f}; input {nbytes / 2**20:.0f} MiB, largest tensor {largest:.0f} MiB")
    for codec in a.codec or CODECS:
        prof = ""
        if a.profile:
            a.profile.mkdir(parents=True, exist_ok=True)
            prof = str(a.profile / f"{codec.replace(':', '_').replace('=', '')}.prof")
        run = fresh_copy(home, a.work / "run")
        r = {}
        for line in bm.common.run_child(__file__, "push", str(run), str(ft), codec, prof):
            if line.startswith("{"):
                r.update(json.loads(line))
        extra = r["peak_anon_mib"] - r["start_anon_mib"]
        mb_s = nbytes / r["wall_s"] / 1e6
        print(f"{codec}: {r['wall_s']:.2f} s, {mb_s:.0f} MB/s, {mb_s / cores:.0f} MB/s per core, "
              f"peak anon +{extra:.0f} MiB = {extra / largest:.1f}x largest tensor", flush=True)
    print(f"load {os.getloadavg()[0]:.2f}")


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


if __name__ == "__main__":
    if sys.argv[1:2] == ["_child"]:
        child_push(*sys.argv[3:])
    else:
        main()
