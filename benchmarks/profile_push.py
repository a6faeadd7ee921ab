"""Profile one push (issue 10's push side): where the time and the memory of ``Registry.push`` go.

Generates bench_rebuild's Llama-shaped bf16 model (base + one fine-tune,
cached in ``WORK/models``), a SQLite registry holding the base (cached in
``WORK/home-base``), then pushes the fine-tune once per codec, each push in a
fresh process into a fresh copy of that registry (blobs hard-linked, so the
push's own blobs are all new and written, as a first push's are) (imports done before the clock starts). Prints, per codec,
wall seconds, MB/s of bf16 input (and per core) and the peak anonymous memory
above the process's start as a multiple of the largest tensor, the figures
bench_rebuild reports; with ``--profile DIR`` each child instead pushes on
one thread (cProfile sees only the thread it runs in), writes a cProfile file
``DIR/<codec>.prof`` and prints its top functions. The pushing child is
``bench_rebuild.py``'s, whose push rows and push profile this script repeats
on demand.

    python benchmarks/profile_push.py --work /tmp/tvpush                       # 168M, lossless + quant:bits=4
    python benchmarks/profile_push.py --work /tmp/tvpush --profile /tmp/prof  # with cProfile
    python benchmarks/profile_push.py --work /tmp/tvpush --size quick          # seconds
"""

from __future__ import annotations

import argparse
import os
import pstats
from pathlib import Path

import bench_merge as bm  # noqa: E402  (this folder is on sys.path when run as a script)
import bench_rebuild as br  # noqa: E402

CODECS = ["lossless", "quant:bits=4"]


def prepare(work: Path, size: str) -> tuple[Path, Path]:
    """(fine-tune path, registry home): the models and the base's registry, made once per ``work``."""
    models = work / "models"
    br.write_models(models, bm.llama_config(*br.SIZES[size]), tasks=1)
    return models / "ft0", br.base_home(work, reuse=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--size", choices=sorted(br.SIZES), default="168M")
    p.add_argument("--codec", action="append", help=f"codec spec (repeatable; default {' and '.join(CODECS)})")
    p.add_argument("--profile", type=Path, help="folder for one cProfile file per codec")
    a = p.parse_args()
    ft, home = prepare(a.work, a.size)
    _, nbytes, largest = br.model_sizes(bm.llama_config(*br.SIZES[a.size]))
    cores = br.push_cores()
    print(f"load {os.getloadavg()[0]:.2f}; input {nbytes / 2**20:.0f} MiB, largest tensor {largest:.0f} MiB")
    for codec in a.codec or CODECS:
        prof = ""
        if a.profile:
            a.profile.mkdir(parents=True, exist_ok=True)
            prof = str(a.profile / f"{codec.replace(':', '_').replace('=', '')}.prof")
        r = br.child("push", str(br.fresh_copy(home, a.work / "run")), "ft0", str(ft), codec, prof)
        extra = r["peak_anon_mib"] - r["start_anon_mib"]
        mb_s = nbytes / r["wall_s"] / 1e6
        print(f"{codec}: {r['wall_s']:.2f} s, {mb_s:.0f} MB/s, {mb_s / cores:.0f} MB/s per core, "
              f"peak anon +{extra:.0f} MiB = {extra / largest:.1f}x largest tensor", flush=True)
        if prof:
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    print(f"load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
