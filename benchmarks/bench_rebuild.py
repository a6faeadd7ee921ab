"""Rebuild benchmark (issue 10): tvstore's reading path against what a user does without it.

A Llama-shaped bf16 model (~168M parameters, 321 MiB per checkpoint) is
generated at run time: a base and three fine-tunes whose deltas are low-rank
(rank 8) plus noise. One SQLite registry per codec holds the base and the
three fine-tunes (lossless, quant 4-bit, ternary; RTVQ packs the three
lossless pushes). Then, each pair timed alternately in one run, median of
``--repeat``:

- ``tvstore pull ft0 --checkpoint --out DIR`` (a whole CLI process) vs ``cp -r``
  of the full fine-tuned checkpoint, warm and cold page cache;
- the same rebuild in-process (``Registry.pull_checkpoint`` after imports and
  one full garbage collection, as every child's clock starts: ``bench_merge.child_start``) vs
  ``shutil.copytree`` in a process of its own;
- a rebuild into memory through the Python API (``Registry.rebuild``, every tensor read) vs
  ``safetensors.torch.load_file`` + reading every tensor, with 1 and 2 rebuild threads (the reading
  consumer's torch on one thread on both sides), with the rebuild's CPU time, user and sys;
- where the time goes: a one-thread rebuild into memory (lossless, quant 4-bit)
  under cProfile, its own time split into reading, zstd, byte planes, hashing,
  torch arithmetic, the database and the rest; and the CLI's start-up (a
  process that only imports the pull path);
- a first push of one fine-tune (lossless, quant 4-bit) into a fresh copy of a
  registry holding only the base: MB/s of bf16 input per core and peak
  anonymous memory above the process's start as a multiple of the largest
  tensor; and where a one-thread push's time goes, under cProfile;
- lossless ratio and decode speed vs ZipNN on the same fine-tune (XOR bits and bf16 deltas).

Cold runs evict the files each side reads: ``echo 3 > /proc/sys/vm/drop_caches``
where permitted, else ``posix_fadvise(DONTNEED)`` on exactly those files (the
report says which). Results: ``benchmarks/results/rebuild.{md,json}``;
``--scale`` writes ``rebuild_scale.{md,json}`` instead, the 1.2B-parameter
rows (lossless and quant 4-bit: the CLI and in-process pulls against copies,
the rebuild into memory and push, with their memory), where the process's
start-up weighs less against the copy than at 168M.

    python benchmarks/bench_rebuild.py --work /tmp/tvbench            # ~6 min on 2 cores
    python benchmarks/bench_rebuild.py --work /tmp/tvbench --quick    # seconds: checks the harness
    python benchmarks/bench_rebuild.py --work /tmp/tvbench --scale    # 1.2B parameters, ~20 GB disk
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import bench_merge as bm  # noqa: E402  (this folder is on sys.path when run as a script)
import machine  # noqa: E402

CODECS = ["lossless", "quant:bits=4", "ternary:density=0.1", "rtvq"]
#: the codecs of the 1.2B rows, and of every size's push rows
SCALE_CODECS = ["lossless", "quant:bits=4"]
SIZES = {  # hidden, layers, vocab (intermediate = 4 x hidden, as bench_merge's llama_config)
    "quick": (64, 2, 512),
    "168M": (768, 12, 36000),
    "1.2B": (2048, 18, 32000),
}


# ---- the generated model ------------------------------------------------------------------------


def model_sizes(cfg: dict) -> tuple[int, int, float]:
    """(parameters, bytes of bf16 input, MiB of the largest tensor) of the generated model."""
    sizes = [math.prod(s) for _, s in bm.llama_shapes(cfg)]
    return sum(sizes), 2 * sum(sizes), 2 * max(sizes) / 2**20


def push_cores() -> int:
    """The cores a push's MB/s is divided by: its two workers, or fewer cores where the machine has fewer."""
    return min(2, os.cpu_count() or 1)


def write_model(out: Path, cfg: dict, seed: int | None) -> None:
    """bf16 base (seed None) or base + low-rank (rank 8) + noise delta, streamed tensor by tensor."""
    from tvstore.checkpoint import write_checkpoint_dir
    from tvstore.checkpoint.reader import TensorInfo

    shapes = bm.llama_shapes(cfg)

    def tensors():
        for k, (name, shape) in enumerate(shapes):
            base = torch.randn(shape, generator=torch.Generator().manual_seed(k)) * 0.02
            if seed is not None:
                g = torch.Generator().manual_seed(10_000 * (seed + 1) + k)
                if len(shape) == 2:
                    a = torch.randn(shape[0], 8, generator=g)
                    b = torch.randn(8, shape[1], generator=g)
                    base += (a @ b) * (0.002 / 8**0.5)
                base += torch.randn(shape, generator=g) * 0.0005
            yield name, base.to(torch.bfloat16)

    infos = [TensorInfo(n, torch.bfloat16, s) for n, s in shapes]
    side = [("config.json", json.dumps({**cfg, "torch_dtype": "bfloat16"}).encode())]
    write_checkpoint_dir(out, infos, tensors(), side_files=side, max_shard_bytes=2 * 1024**3)


def write_models(models: Path, cfg: dict, tasks: int) -> None:
    """The base and fine-tunes ft0..ft{tasks-1} under ``models``, each kept once complete (a later run reuses it)."""
    for name, seed in [("base", None)] + [(f"ft{t}", t) for t in range(tasks)]:
        if not (models / name / ".complete").exists():
            shutil.rmtree(models / name, ignore_errors=True)
            write_model(models / name, cfg, seed)
            (models / name / ".complete").touch()


def prepare(work: Path, cfg: dict, codecs: list[str], reuse: bool = False) -> dict[str, Path]:
    """Models (cached in ``work/models``) and one registry per codec, rebuilt from scratch (unless ``reuse``)."""
    models = work / "models"
    tasks = 3 if "rtvq" in codecs else 1  # RTVQ packs a group; the other codecs need one fine-tune
    write_models(models, cfg, tasks)
    homes = {}
    for codec in codecs:
        home = homes[codec] = work / bm.home_name(codec)
        if reuse and (home / ".ready").exists():
            continue
        shutil.rmtree(home, ignore_errors=True)
        with bm.open_registry(str(home)) as reg:
            reg.init()
            reg.add_base("base", models / "base")
            for t in range(tasks):
                reg.push(f"ft{t}", models / f"ft{t}", base="base", codec="lossless" if codec == "rtvq" else codec)
            if codec == "rtvq":
                reg.pack(["ft0", "ft1", "ft2"], "rtvq")
        (home / ".ready").touch()
        print(f"  registry {codec}: ready", flush=True)
    return homes


def vector_ref(codec: str) -> str:
    return "ft0@2" if codec == "rtvq" else "ft0"


def read_set(home: Path, codec: str) -> list[Path]:
    """Every file a rebuild of ft0 reads: the database, the base's blobs and the vector's blobs."""
    files = bm.vector_blob_files(home, [vector_ref(codec)])
    return sorted(set(files) | {home / "registry.db"})


# ---- cache eviction -----------------------------------------------------------------------------


def drop_caches(files: list[Path]) -> str:
    """Evict ``files`` from the page cache; returns how (the report names the method)."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return "drop_caches"
    except OSError:
        bm.drop_cache(files)
        return "posix_fadvise(DONTNEED) on the files read"


# ---- measured children (imports done before the clock starts) ------------------------------------


def import_tvstore() -> None:
    """What a push or a rebuild loads lazily (codecs, sources, the writer), imported before the clock as
    bench_merge's children import their merge machinery: start-up is the CLI rows' and the start-up row's."""
    import tvstore.ops.pull  # noqa: F401
    import tvstore.ops.push  # noqa: F401
    import tvstore.registry  # noqa: F401


def child_pull(home: str, ref: str, out: str) -> None:
    import_tvstore()

    t0 = bm.child_start()
    with bm.open_registry(home) as reg:
        reg.pull_checkpoint(ref, Path(out), max_shard_bytes=2 * 1024**3)
    bm.child_report(t0)


def child_copytree(src: str, out: str) -> None:
    t0 = bm.child_start()
    shutil.copytree(src, out)
    bm.child_report(t0)


def one_thread_consumer() -> None:
    """The process's own torch ops (the consumer's read of every tensor; with one worker, the rebuild itself)
    on one thread, on both sides: with two intra-op threads beside two rebuild workers the consumer
    oversubscribed two cores, and a "one thread" rebuild ran on two."""
    torch.set_num_threads(1)


def child_rebuild(home: str, ref: str, workers: str) -> None:
    """Every rebuilt tensor read (every byte: bench_merge.touch), through the Python API."""
    import_tvstore()
    one_thread_consumer()

    t0 = bm.child_start()  # its report gives the anonymous memory at the start, to subtract
    with bm.open_registry(home) as reg:
        n = sum(bm.touch(t) for _, t in reg.rebuild(ref, workers=int(workers)))
    assert n > 0
    bm.child_report(t0)


#: where a profiled rebuild's or push's own time goes: the first rule whose needle is in a function's key takes it
PROFILE_PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("read blob files", ("'readinto' of '_io.FileIO'",)),
    ("read the fine-tune (safetensors)", ("safe_open", "torch/storage.py")),
    ("zstd decode", ("ZstdDecompressor",)),
    ("zstd encode", ("ZstdCompressor",)),
    ("byte planes: join, rotate, XOR (numpy)", ("tvstore/codecs/planes.py",)),
    ("codes: unpack, table lookups (numpy)", ("tvstore/codecs/bitpack.py", "'take' of 'numpy.ndarray'")),
    ("other codec code, with its inline numpy operators", ("tvstore/codecs/",)),
    ("content hash", ("_hashlib", "blake3")),
    ("write blob files (and fsync)", ("'write' of '_io.BufferedWriter'", "posix.fsync")),
    ("torch arithmetic: codecs, deltas, error sums", ("torch._C", "/torch/", "built-in method torch.",
                                                     "tvstore/tensors/")),
    ("database (SQLAlchemy, SQLite)", ("sqlalchemy", "sqlite3")),
)


def own_time_by_part(prof, first: tuple[tuple[str, tuple[str, ...]], ...] = ()) -> dict[str, float]:
    """A cProfile run's own time per function, summed per part of ``first`` then :data:`PROFILE_PARTS`
    (the rest: "Python and other")."""
    import pstats

    table = (*first, *PROFILE_PARTS)
    parts = dict.fromkeys([name for name, _ in table] + ["Python and other"], 0.0)
    for (path, line, func), (_, _, own, _, _) in pstats.Stats(prof).stats.items():
        key = f"{path}:{line}:{func}"
        parts[next((name for name, needles in table if any(n in key for n in needles)), "Python and other")] += own
    return parts


def child_profile(home: str, ref: str) -> None:
    """One rebuild into memory on one thread under cProfile: seconds of own time per part (PROFILE_PARTS)."""
    import cProfile

    import_tvstore()

    torch.set_num_threads(1)
    with bm.open_registry(home) as reg:  # once unprofiled: blobs verified and marked, as on any later read
        for _ in reg.rebuild(ref, workers=1):
            pass
    prof = cProfile.Profile()
    with bm.open_registry(home) as reg:
        prof.enable()
        for _ in reg.rebuild(ref, workers=1):
            pass
        prof.disable()
    print(json.dumps({"parts": own_time_by_part(prof)}))


def child_load(ckpt: str) -> None:
    one_thread_consumer()
    bm.run_load_full(ckpt)


def child_push(home: str, name: str, path: str, codec: str, profile: str = "") -> None:
    """One push, timed; with ``profile`` ("-", or a file for the cProfile stats) on one thread under cProfile,
    printing its own time per part (PROFILE_PARTS): cProfile sees only the thread it runs in."""
    import cProfile

    import tvstore.ops.push

    import_tvstore()
    if profile:
        tvstore.ops.push.push_workers = lambda: 1
        torch.set_num_threads(1)  # single-threaded ops, as in the push's own workers
    prof = cProfile.Profile() if profile else None
    t0 = bm.child_start()
    with bm.open_registry(home) as reg:
        if prof:
            prof.enable()
        reg.push(name, Path(path), base="base", codec=codec)
        if prof:
            prof.disable()
    if prof:
        if profile != "-":
            prof.dump_stats(profile)
        print(json.dumps({"parts": own_time_by_part(prof)}))
    bm.child_report(t0)


def base_home(work: Path, reuse: bool = False) -> Path:
    """A registry holding only the base (``work/home-base``): what every push starts from, copied fresh per push."""
    home = work / "home-base"
    if not (reuse and (home / ".ready").exists()):
        shutil.rmtree(home, ignore_errors=True)
        with bm.open_registry(str(home)) as reg:
            reg.init()
            reg.add_base("base", work / "models" / "base")
        (home / ".ready").touch()
    return home


def fresh_copy(home: Path, run: Path) -> Path:
    """``home`` copied with its blobs hard-linked, the database copied: a push into it writes every blob of its
    own (into a registry that already held the fine-tune, every blob would exist and nothing would be written)."""
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(home, run, copy_function=os.link, ignore=shutil.ignore_patterns("registry.db*", ".ready"))
    shutil.copy2(home / "registry.db", run / "registry.db")
    return run


CHILDREN = {"pull": child_pull, "copytree": child_copytree, "rebuild": child_rebuild, "load": child_load,
            "push": child_push, "profile": child_profile}


def child(*args: str, out: Path | None = None, env: dict[str, str] | None = None) -> dict:
    """One measured child; ``out`` is cleared before and after. Returns its last JSON line (+ earlier ones)."""
    result: dict = {}
    os.sync()  # see timed()
    for line in bm.common.run_child(__file__, *args, out=out, env=env):
        if line.startswith("{"):
            result.update(json.loads(line))
    return result


def timed(cmd: list[str], out: Path | None = None) -> float:
    """Wall seconds of a whole process (start-up and imports included); ``out`` is cleared before and after.

    Dirty pages are written back before the clock starts: a run that writes a checkpoint otherwise
    leaves the next run (either side's) paying for its writeback, which at 1.2B parameters swung a
    warm ``cp -r`` by several times from one run to the next.
    """
    if out is not None:
        shutil.rmtree(out, ignore_errors=True)
    os.sync()
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    wall = time.perf_counter() - t0
    if out is not None:
        shutil.rmtree(out, ignore_errors=True)
    return wall


# ---- the pairs ------------------------------------------------------------------------------------


def pair(ref_fn, tv_fn, repeat: int, evict=None) -> dict:
    """Alternate reference and tvstore ``repeat`` times (evicting first if cold); medians and the ratio."""
    refs, tvs, how = [], [], ""
    for _ in range(repeat):
        for fn, bucket in ((ref_fn, refs), (tv_fn, tvs)):
            if evict is not None:
                how = evict(fn is ref_fn)
            bucket.append(fn())
    ref, tv = statistics.median(refs), statistics.median(tvs)
    return {"ref_s": ref, "tv_s": tv, "ratio": tv / ref, "ref_runs": refs, "tv_runs": tvs, "evicted_by": how}


def pull_rows(a, work: Path, homes: dict[str, Path]) -> list[dict]:
    ckpt, out = work / "models" / "ft0", work / "out"
    tvstore = str(Path(sys.executable).with_name("tvstore"))
    cp = ["cp", "-r", str(ckpt), str(out)]
    rows = []
    for codec in a.codecs:
        home, ref = homes[codec], vector_ref(codec)
        pull = [tvstore, "--home", str(home), "pull", ref, "--checkpoint", "--out", str(out)]
        inputs = {True: bm.files_under(ckpt), False: read_set(home, codec)}
        for cache in ("warm", "cold"):
            evict = (lambda is_ref: drop_caches(inputs[is_ref])) if cache == "cold" else None
            if evict is None:
                timed(cp, out), timed(pull, out)  # warm the page cache once
            r = pair(lambda: timed(cp, out), lambda: timed(pull, out), a.repeat, evict)
            rows.append({"what": "pull --checkpoint (CLI process) vs cp -r", "codec": codec, "cache": cache, **r})
            print(f"  pull {codec} {cache}: {r['tv_s']:.2f}s vs {r['ref_s']:.2f}s", flush=True)
    for codec in a.codecs:
        home, ref = homes[codec], vector_ref(codec)
        if codec in ("lossless", "quant:bits=4"):  # the process start-up left out: what is left to win
            r = pair(lambda: child("copytree", str(ckpt), str(out), out=out)["wall_s"],
                     lambda: child("pull", str(home), ref, str(out), out=out)["wall_s"], a.repeat)
            rows.append({"what": "pull_checkpoint in-process vs copytree", "codec": codec, "cache": "warm", **r})
    return rows


def rebuild_threads(codec: str, scale: bool) -> tuple[int, ...]:
    """The rebuild threads a codec's in-memory rows use: 1 and 2 for lossless at 168M, else 2."""
    return (1, 2) if codec == "lossless" and not scale else (2,)


def rebuild_rows(a, work: Path, homes: dict[str, Path], nbytes: int, largest_mib: float) -> list[dict]:
    ckpt = work / "models" / "ft0"
    rows = []
    for codec in a.codecs:
        home, ref = homes[codec], vector_ref(codec)
        for workers in rebuild_threads(codec, a.scale):
            runs: dict[str, list[dict]] = {"ref": [], "tv": []}
            r = pair(lambda: (runs["ref"].append(child("load", str(ckpt))) or runs["ref"][-1]["wall_s"]),
                     lambda: (runs["tv"].append(child("rebuild", str(home), ref, str(workers))) or runs["tv"][-1]["wall_s"]),
                     a.repeat)
            extra = statistics.median(x["peak_anon_mib"] - x.get("start_anon_mib", 0.0) for x in runs["tv"])
            cpu = {k: statistics.median(x[k] for x in runs["tv"]) for k in ("cpu_user_s", "cpu_sys_s")}
            rows.append({"what": "rebuild in memory vs load_file", "codec": codec, "workers": workers,
                         "out_gb_s": nbytes / r["tv_s"] / 1e9, "peak_extra_anon_mib": extra,
                         "x_largest": extra / largest_mib, **cpu, **r})
            print(f"  rebuild {codec} x{workers}: {r['tv_s']:.2f}s vs {r['ref_s']:.2f}s", flush=True)
    return rows


def profile_rows(a, homes: dict[str, Path]) -> dict:
    """Where the time goes: one-thread in-memory rebuilds under cProfile, and the CLI's start-up."""
    rows = [{"codec": codec, **child("profile", str(homes[codec]), vector_ref(codec))}
            for codec in a.codecs if codec in ("lossless", "quant:bits=4")]
    # ended as the command ends (``leave``: no interpreter finalization), so this is the fixed cost it pays
    imports = [sys.executable, "-c", "import tvstore.cli.app, tvstore.ops.pull; tvstore.cli.app.leave(0)"]
    startup = statistics.median(timed(imports) for _ in range(a.repeat))
    return {"rebuilds": rows, "startup": {"seconds": startup, "command": f"python -c '{imports[-1]}'"}}


def first_push(work: Path, base: Path, codec: str, *profile: str) -> dict:
    """One push child of ``work/models/ft0`` into a fresh copy of ``base`` (``work/push-run``); ``profile`` as
    child_push's."""
    return child("push", str(fresh_copy(base, work / "push-run")), "ft0", str(work / "models" / "ft0"), codec,
                 *profile)


def push_rows(a, work: Path, nbytes: int, largest_mib: float) -> list[dict]:
    """Each push a first one: into a fresh copy of the base's registry, so it writes all its blobs."""
    base, rows = base_home(work, a.reuse), []
    for codec in SCALE_CODECS:
        runs = [first_push(work, base, codec) for _ in range(a.repeat)]
        wall = statistics.median(r["wall_s"] for r in runs)
        extra = statistics.median(r["peak_anon_mib"] - r["start_anon_mib"] for r in runs)
        rows.append({"codec": codec, "wall_s": wall, "mb_s": nbytes / wall / 1e6,
                     "mb_s_per_core": nbytes / wall / 1e6 / push_cores(),
                     "peak_extra_anon_mib": extra, "largest_mib": largest_mib, "x_largest": extra / largest_mib,
                     "runs": runs})
        print(f"  push {codec}: {nbytes / wall / 1e6:.0f} MB/s, {extra / largest_mib:.1f}x largest", flush=True)
    shutil.rmtree(work / "push-run", ignore_errors=True)
    return rows


def push_profile_rows(a, work: Path) -> list[dict]:
    """Where a first push's time goes: one push per codec on one thread under cProfile."""
    base = base_home(work, reuse=True)
    rows = [{"codec": codec, **first_push(work, base, codec, "-")} for codec in SCALE_CODECS]
    shutil.rmtree(work / "push-run", ignore_errors=True)
    return rows


def zipnn_rows(work: Path, limit: int = 6) -> list[dict]:
    """tvstore lossless vs ZipNN on ft0's largest ``limit`` tensors, one thread each.

    tvstore stores an exact fine-tune as its bits XOR the base's (what ``push
    --codec lossless`` writes, made here by the same function). ZipNN is given
    the same XOR bits, and also the arithmetic bf16 delta ``ft - base`` (which
    alone does not rebuild ``ft`` exactly). Ratios are of the same raw bytes;
    decode is payload to its own bits, checked bit-exact.
    """
    from safetensors.torch import load_file
    from zipnn import ZipNN

    from tvstore.codecs.lossless import Lossless
    from tvstore.tensors.encode import xor_component

    base = load_file(work / "models" / "base" / "model.safetensors")
    ft = load_file(work / "models" / "ft0" / "model.safetensors")
    names = sorted(base, key=lambda n: -base[n].numel())[:limit]
    xors = [(ft[n].view(torch.int16) ^ base[n].view(torch.int16)).contiguous() for n in names]
    taus = [(ft[n] - base[n]).contiguous() for n in names]
    raw = sum(x.numel() * x.element_size() for x in xors)
    torch.set_num_threads(1)
    ours = Lossless()
    zpn = ZipNN(input_format="torch", bytearray_dtype="bfloat16", threads=1)

    def best(fn) -> float:
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    def zipnn_row(tool: str, tensors: list[torch.Tensor]) -> dict:
        payloads = [zpn.compress(t.clone()) for t in tensors]
        for p, t in zip(payloads, tensors):
            assert torch.equal(zpn.decompress(p).view(torch.int16), t.view(torch.int16))
        dec = best(lambda: [zpn.decompress(p) for p in payloads])
        return {"tool": tool, "ratio": raw / sum(len(p) for p in payloads), "decode_mb_s": raw / dec / 1e6}

    tv_payloads = [xor_component(ft[n], base[n], ours).payload for n in names]
    for p, x in zip(tv_payloads, xors):
        assert torch.equal(ours.decode(p, tuple(x.shape), torch.int16), x)
    tv_dec = best(lambda: [ours.decode(p, tuple(x.shape), torch.int16) for p, x in zip(tv_payloads, xors)])
    return [
        {"tool": "tvstore lossless (ft XOR base, as pushed)", "ratio": raw / sum(len(p) for p in tv_payloads),
         "decode_mb_s": raw / tv_dec / 1e6},
        zipnn_row("zipnn, same XOR bits (1 thread)", [x.view(torch.bfloat16) for x in xors]),
        zipnn_row("zipnn, bf16 delta ft - base (1 thread; not exact alone)", taus),
    ] + [{"raw_mib": raw / 2**20, "tensors": len(names)}]


# ---- report -------------------------------------------------------------------------------------


def report(res: dict) -> str:
    m = res["machine"]
    lines = [f"# Rebuild benchmark ({res['model']})", "", machine.describe(m), "",
             f"Cold runs evict with: {res['evicted_by']}. Each pair alternates reference and tvstore; medians of "
             f"{res['repeat']}. In-process timings (every row but the CLI's) start after the imports and one full "
             "garbage collection, on both sides.", ""]
    lines += ["## Rebuild a fine-tune to disk vs copying its checkpoint", "",
              "| what | codec | cache | tvstore s | reference s | tvstore / reference |", "|---|---|---|--:|--:|--:|"]
    for r in res["pull"]:
        lines.append(f"| {r['what']} | {r['codec']} | {r['cache']} | {r['tv_s']:.2f} | {r['ref_s']:.2f} | {r['ratio']:.2f}x |")
    lines += ["", "## Rebuild into memory vs `safetensors.torch.load_file` + reading every tensor", "",
              "| codec | threads | tvstore s | load_file s | tvstore / load_file | output GB/s | GB/s per thread "
              "| tvstore CPU user s | tvstore CPU sys s | peak memory above start MiB | x largest tensor |",
              "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in res["rebuild"]:
        lines.append(f"| {r['codec']} | {r['workers']} | {r['tv_s']:.2f} | {r['ref_s']:.2f} | {r['ratio']:.2f}x | "
                     f"{r['out_gb_s']:.2f} | {r['out_gb_s'] / r['workers']:.2f} | {r['cpu_user_s']:.2f} | "
                     f"{r['cpu_sys_s']:.2f} | {r['peak_extra_anon_mib']:.0f} | {r['x_largest']:.1f} |")
    if res.get("profile"):
        lines += profile_section(res["profile"], res["pull"])
    lines += ["", "## First push of one fine-tune (in-process, 2 threads, into a registry holding only the base)", "",
              "| codec | wall s | MB/s | MB/s per core | peak memory above start MiB | x largest tensor |",
              "|---|--:|--:|--:|--:|--:|"]
    for r in res["push"]:
        lines.append(f"| {r['codec']} | {r['wall_s']:.2f} | {r['mb_s']:.0f} | {r['mb_s_per_core']:.0f} | "
                     f"{r['peak_extra_anon_mib']:.0f} | {r['x_largest']:.1f} |")
    if res.get("push_profile"):
        lines += parts_table("Where a push's time goes (one-thread first push under cProfile, own time per part)",
                             res["push_profile"])
    if res.get("zipnn"):
        info = res["zipnn"][-1]
        lines += ["", f"## Lossless vs ZipNN on the same fine-tune ({info['tensors']} largest tensors of ft0, "
                      f"{info['raw_mib']:.0f} MiB, one thread, best of 3)", "",
                  "| tool | ratio | decode MB/s |", "|---|--:|--:|"]
        for r in res["zipnn"][:-1]:
            lines.append(f"| {r['tool']} | {r['ratio']:.3f} | {r['decode_mb_s']:.0f} |")
    lines += ["", f"Command: `{res['command']}`", ""]
    return "\n".join(lines)


def parts_table(title: str, rows: list[dict]) -> list[str]:
    """Each row's parts as seconds and shares of its total; parts no row spent time in are left out."""
    names = [n for n in rows[0]["parts"] if any(r["parts"][n] for r in rows)]
    lines = ["", f"## {title}", "", "| part | " + " | ".join(f"{r['codec']} s | share" for r in rows) + " |",
             "|---|" + "--:|--:|" * len(rows)]
    for name in names + ["total"]:
        cells = []
        for r in rows:
            total = sum(r["parts"].values())
            value = total if name == "total" else r["parts"][name]
            cells.append(f"{value:.2f} | {value / total:.0%}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def profile_section(profile: dict, pulls: list[dict]) -> list[str]:
    """The profile's parts as shares of each codec's one-thread rebuild, then the CLI's start-up."""
    startup = profile["startup"]
    lines = parts_table("Where the time goes (one-thread rebuild into memory under cProfile, own time per part)",
                        profile["rebuilds"])
    warm = [r for r in pulls if r["cache"] == "warm" and r["what"].startswith("pull --checkpoint")]
    whole = ", ".join(f"{r['codec']} {r['tv_s']:.2f} s" for r in warm)
    lines += ["", f"Interpreter start-up and imports of the pull path (`{startup['command']}`, a whole "
                  f"process that ends as the command does, without finalization; median): {startup['seconds']:.2f} s"
              + (f"; the whole warm `pull --checkpoint` processes above: {whole}." if warm else ".")]
    return lines


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="models (cached) and registries (rebuilt each run)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--codecs", default=",".join(CODECS))
    ap.add_argument("--quick", action="store_true", help="tiny model, one repeat: checks the harness")
    ap.add_argument("--reuse", action="store_true", help="keep registries a previous run completed (timing only)")
    ap.add_argument("--scale", action="store_true", help="the 1.2B-parameter rows (lossless and quant 4-bit)")
    ap.add_argument("--results", type=Path, default=None, help="writes <results>.md and .json")
    a = ap.parse_args()
    a.size = "quick" if a.quick else "1.2B" if a.scale else "168M"
    if a.quick:
        a.repeat = 1
    if a.scale:
        a.codecs = ",".join(SCALE_CODECS)
    a.codecs = a.codecs.split(",")
    a.results = a.results or bm.results_path("rebuild_scale" if a.scale else "rebuild", a.work, a.quick)
    return a


def main() -> None:
    a = parse_args()
    hidden, layers, vocab = SIZES[a.size]
    cfg = bm.llama_config(hidden, layers, vocab)
    params, nbytes, largest_mib = model_sizes(cfg)
    work = a.work / a.size
    work.mkdir(parents=True, exist_ok=True)
    before = machine.snapshot(settle=True)
    homes = prepare(work, cfg, a.codecs, a.reuse)
    res = {"model": f"{params / 1e6:.1f}M parameters, bf16, {nbytes / 2**20:.0f} MiB per checkpoint, "
                    f"largest tensor {largest_mib:.0f} MiB", "params": params, "repeat": a.repeat,
           "command": "python " + " ".join(sys.argv)}
    res["pull"] = pull_rows(a, work, homes)
    res["evicted_by"] = next((r["evicted_by"] for r in res["pull"] if r["evicted_by"]), "-")
    res["rebuild"] = rebuild_rows(a, work, homes, nbytes, largest_mib)
    res["profile"] = {} if a.scale else profile_rows(a, homes)
    res["push"] = push_rows(a, work, nbytes, largest_mib)
    res["push_profile"] = [] if a.scale else push_profile_rows(a, work)
    res["zipnn"] = [] if a.scale else zipnn_rows(work)
    res["machine"] = machine.finish(before)
    text = report(res)
    print(text)
    a.results.parent.mkdir(parents=True, exist_ok=True)
    a.results.with_suffix(".md").write_text(text)
    a.results.with_suffix(".json").write_text(json.dumps(res, indent=2))
    shutil.rmtree(work / "out", ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        CHILDREN[sys.argv[2]](*sys.argv[3:])
    else:
        main()
