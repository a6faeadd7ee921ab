"""Merge benchmark: mergekit from full checkpoints vs tvstore from its compressed registry.

For each (method, number of tasks, codec) the same merge runs twice, each in its
own subprocess so peak RSS and disk reads are per tool:

- mergekit (``run_merge``) reading N full fp32 fine-tuned checkpoints;
- tvstore reading the registry (base stored once, N compressed task vectors).

Both write a safetensors directory. Also timed: rebuilding one fine-tune from
the registry vs ``safetensors.torch.load_file`` of the full checkpoint.

Usage::

    python benchmarks/bench_merge.py --work /tmp/bench --quick          # seconds, tiny model
    python benchmarks/bench_merge.py --work /tmp/bench                  # ~25M parameters, 2/4/8 tasks
    python benchmarks/bench_merge.py --work /tmp/bench --postgres       # + the registry on PostgreSQL
    python benchmarks/bench_merge.py --work /tmp/bench --big            # + flat-memory check on a ~1.2B base

Every measurement runs once cold (the files it reads are dropped from the page
cache with ``posix_fadvise(DONTNEED)`` first) and ``--repeat`` times warm.
Reported: cold wall seconds, median warm wall seconds, median peak RSS (MiB,
VmHWM of the child), bytes read from disk in the cold run (``/proc/self/io``
read_bytes after imports, which counts mmap faults too), and the input bytes
on disk (what each tool has to read). Fine-tunes are base + seeded noise, so
the absolute compression of lossy codecs is not representative of real
fine-tunes; the time and memory ratios are the point. Results go to
``benchmarks/results/merge.{md,json}`` (``--results``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import yaml  # noqa: E402

import common  # noqa: E402  (benchmarks/common.py: run as a script, this folder is on sys.path)
import machine  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def results_path(name: str, work: Path, quick: bool) -> Path:
    """Where a run writes ``<name>.md`` and ``.json``: the committed tables, or for a ``--quick`` harness check
    the work folder (a check must never overwrite the committed tables)."""
    return work / f"{name}-quick" if quick else RESULTS / name


RECIPES = {
    "task_arithmetic": {"weight": 0.5},
    "ties": {"weight": 0.5, "density": 0.3},
}


# ---- synthetic models ---------------------------------------------------------------------------


def llama_config(hidden: int, layers: int, vocab: int) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
        "intermediate_size": hidden * 4, "num_hidden_layers": layers, "num_attention_heads": max(1, hidden // 64),
        "num_key_value_heads": max(1, hidden // 64), "vocab_size": vocab, "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "torch_dtype": "float32",
    }


def llama_shapes(cfg: dict) -> list[tuple[str, tuple[int, ...]]]:
    h, i, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    shapes = [("model.embed_tokens.weight", (v, h))]
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}."
        shapes += [(p + "input_layernorm.weight", (h,)), (p + "post_attention_layernorm.weight", (h,))]
        shapes += [(p + f"self_attn.{x}_proj.weight", (h, h)) for x in "qkvo"]
        shapes += [(p + "mlp.gate_proj.weight", (i, h)), (p + "mlp.up_proj.weight", (i, h)),
                   (p + "mlp.down_proj.weight", (h, i))]
    return shapes + [("model.norm.weight", (h,)), ("lm_head.weight", (v, h))]


def write_model(out: Path, cfg: dict, seed: int | None) -> None:
    """Base (seed None) or base + seeded noise, streamed tensor by tensor."""
    from tvstore.checkpoint import write_checkpoint_dir
    from tvstore.checkpoint.reader import TensorInfo

    shapes = llama_shapes(cfg)

    def tensors():
        for k, (name, shape) in enumerate(shapes):
            base = torch.randn(shape, generator=torch.Generator().manual_seed(k)) * 0.02
            if seed is not None:
                noise = torch.randn(shape, generator=torch.Generator().manual_seed(10_000 * (seed + 1) + k))
                base += noise * 0.002
            yield name, base

    infos = [TensorInfo(n, torch.float32, s) for n, s in shapes]
    side = [("config.json", json.dumps(cfg).encode())]
    write_checkpoint_dir(out, infos, tensors(), side_files=side, max_shard_bytes=2 * 1024**3)


# ---- measured children --------------------------------------------------------------------------


def io_counters() -> dict[str, int]:
    """``/proc/self/io``: read_bytes (from disk; 0 when the page cache serves) and rchar (read syscalls)."""
    try:
        return {k: int(v) for k, v in (line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())}
    except OSError:
        return {"read_bytes": 0, "rchar": 0}


def peak_rss_mib() -> float:
    """VmHWM of this process: unlike ru_maxrss it is not inherited from the parent across fork/exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


_IO0: dict[str, int] = {}
_CPU0: dict[str, float] = {}
_ANON = {"peak": 0.0}


def rss_anon_mib() -> float:
    """RssAnon: the process's own memory, without the file pages that mmap'd checkpoints add to RSS."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return 0.0


def sample_anon() -> None:
    """Background sampler (every 20 ms): the kernel keeps no high-water mark for RssAnon alone."""
    while True:
        _ANON["peak"] = max(_ANON["peak"], rss_anon_mib())
        time.sleep(0.02)


def child_start() -> float:
    """The clock starts here, in every child (tvstore's and the references'): after the imports and after one
    full garbage collection of what they created, which a fresh process would otherwise pay inside the first
    timed call (~0.3 s when torch is imported; a long-running user process paid it long before)."""
    import gc
    import threading

    _ANON["start"] = rss_anon_mib()  # the interpreter and the imports, not the work's own memory (reported)
    gc.collect()
    _IO0.update(io_counters())
    _CPU0.update(cpu_seconds())
    threading.Thread(target=sample_anon, daemon=True).start()
    return time.perf_counter()


def cpu_seconds() -> dict[str, float]:
    """This process's CPU time so far, all threads: user (its own code) and sys (the kernel's work for it,
    page faults on fresh memory among it)."""
    use = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu_user_s": use.ru_utime, "cpu_sys_s": use.ru_stime}


def child_report(t0: float) -> None:
    io = io_counters()
    rss = peak_rss_mib()
    anon = max(_ANON["peak"], rss_anon_mib())
    print(json.dumps({"wall_s": time.perf_counter() - t0, "peak_rss_mib": rss, "peak_anon_mib": anon,
                      "start_anon_mib": _ANON.get("start", 0.0),
                      "read_bytes": io["read_bytes"] - _IO0.get("read_bytes", 0),
                      "rchar": io["rchar"] - _IO0.get("rchar", 0),
                      **{k: v - _CPU0.get(k, 0.0) for k, v in cpu_seconds().items()}}))


def run_mergekit(work: str, recipe: str, out: str) -> None:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    t0 = child_start()  # after the imports, as for tvstore: both measure the merge, not start-up
    os.chdir(Path(work) / "models")
    config = MergeConfiguration.model_validate(yaml.safe_load(Path(recipe).read_text()))
    run_merge(config, out, MergeOptions(copy_tokenizer=False, write_model_card=False, quiet=True))
    child_report(t0)


def open_registry(home: str, database_url: str = ""):
    """The SQLite registry in ``home``, or its blobs with metadata in PostgreSQL (``database_url``)."""
    from tvstore.registry import Registry

    if database_url:
        return Registry.open(database_url=database_url, blob_url=str(Path(home) / "blobs"))
    return Registry.open(home=home)


def run_tvstore(home: str, recipe: str, out: str, database_url: str = "") -> None:
    """``tvstore merge --recipe --out``: the registry's own path (``merge_to_dir``)."""
    # imports are interpreter start-up, not merge work: the modules merge_to_dir loads lazily are loaded
    # here, as mergekit's child imports its merge machinery (and its pydantic recipe models) before the clock
    import tvstore.merge  # noqa: F401
    import tvstore.merge.recipe_schema  # noqa: F401
    import tvstore.ops.merges  # noqa: F401
    import tvstore.ops.pull  # noqa: F401
    import tvstore.registry  # noqa: F401

    t0 = child_start()
    with open_registry(home, database_url) as reg:
        reg.merge_to_dir(Path(recipe), Path(out), max_shard_bytes=2 * 1024**3)
    child_report(t0)


def run_tvstore_profile(home: str, recipe: str) -> None:
    """The merge's tensors computed on one thread under cProfile (which sees only its own thread), not written:
    seconds of own time per part (``bench_rebuild.own_time_by_part``, with the merge's sorts apart)."""
    import cProfile

    import bench_rebuild as br
    from tvstore.merge import materialize

    torch.set_num_threads(1)
    prof = cProfile.Profile()
    with open_registry(home) as reg:
        merger = reg.merger(Path(recipe))
        prof.enable()
        for _ in materialize(merger, workers=1):
            pass
        prof.disable()
    print(json.dumps({"parts": br.own_time_by_part(prof, MERGE_PROFILE_PARTS)}))


#: a merge's own parts, ahead of bench_rebuild's (a part takes the functions no earlier part took)
MERGE_PROFILE_PARTS = (("full sort (torch.argsort)", ("torch.argsort",)),
                       ("partial sort (numpy partition)", ("'partition' of 'numpy.ndarray'",)))


def run_load_full(ckpt: str) -> None:
    from safetensors.torch import load_file

    t0 = child_start()
    n = sum(touch(t) for f in sorted(Path(ckpt).glob("*.safetensors")) for t in load_file(f).values())
    assert n > 0
    child_report(t0)


def touch(t: torch.Tensor) -> int:
    """Read every byte (a max over them), the same for both sides: ``load_file`` maps the file lazily,
    so a reference that reads less (one byte per page) measures page faults, not a load."""
    return int(t.reshape(-1).view(torch.uint8).max()) + 1


def run_rebuild(home: str, ref: str) -> None:
    """Rebuild one fine-tune into memory (what ``pull --checkpoint`` does, minus the writing)."""
    from tvstore.db.queries import get_full_base
    from tvstore.ops.pull import checkpoint_tensors, rebuilt_tensors
    from tvstore.tensors.sources import BaseSource
    import tvstore.registry  # noqa: F401

    t0 = child_start()
    with open_registry(home) as reg:
        vector = reg.delta_tensors(ref)
        with reg.session() as session:
            base = BaseSource(get_full_base(session, vector.vector.base_id), reg.blobs)
        names = [i.name for i in checkpoint_tensors(base, vector)[0]]
        n = sum(t.numel() for _, t in rebuilt_tensors(base, vector, names))
    assert n > 0
    child_report(t0)


def run_pull(home: str, ref: str, out: str) -> None:
    """``tvstore pull --checkpoint``: rebuild and write a HF directory."""
    import tvstore.registry  # noqa: F401

    t0 = child_start()
    with open_registry(home) as reg:
        reg.pull_checkpoint(ref, Path(out), max_shard_bytes=2 * 1024**3)
    child_report(t0)


def run_push(home: str, name: str, path: str) -> None:
    import tvstore.registry  # noqa: F401

    t0 = child_start()
    with open_registry(home) as reg:
        reg.push(name, Path(path), base="base", codec="lossless")
    child_report(t0)


CHILDREN = {"mergekit": run_mergekit, "tvstore": run_tvstore, "tvstore-profile": run_tvstore_profile,
            "load-full": run_load_full, "rebuild": run_rebuild, "pull": run_pull, "push": run_push}


# ---- measuring ----------------------------------------------------------------------------------


def files_under(*paths: Path) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        out += [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file()]
    return out


def drop_cache(paths: list[Path]) -> None:
    """Evict these files from the page cache (flushed first: dirty pages cannot be dropped)."""
    for f in paths:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def child(*args: str, out: Path | None = None, env: dict[str, str] | None = None) -> dict:
    """Run one child; ``out`` (its output directory) is cleared first so reruns work; ``env`` replaces the
    environment (``ab_rebuild``: another commit's tvstore on ``PYTHONPATH``)."""
    return json.loads(common.run_child(__file__, *args, out=out, env=env)[-1])


def measure(args: list[str], inputs: list[Path], repeat: int, out: Path | None = None) -> dict:
    """One cold run (inputs evicted from the page cache), then ``repeat`` warm runs; medians."""
    drop_cache(inputs)
    cold = child(*args, out=out)
    warm = [child(*args, out=out) for _ in range(repeat)]
    return {
        "cold_s": cold["wall_s"], "warm_s": statistics.median(w["wall_s"] for w in warm) if warm else cold["wall_s"],
        "peak_rss_mib": statistics.median([cold["peak_rss_mib"]] + [w["peak_rss_mib"] for w in warm]),
        "peak_anon_mib": statistics.median([cold.get("peak_anon_mib", 0)] + [w.get("peak_anon_mib", 0) for w in warm]),
        "work_anon_mib": statistics.median(r.get("peak_anon_mib", 0) - r.get("start_anon_mib", 0) for r in [cold, *warm]),
        "read_bytes": cold["read_bytes"], "input_bytes": sum(f.stat().st_size for f in inputs),
        "runs": [cold, *warm],
    }


def row(kind: str, tasks: int, codec: str, theirs, ours) -> dict:
    """Both measurements (callables); a failure is recorded in the row rather than ending the run."""
    try:
        return {"kind": kind, "tasks": tasks, "codec": codec, "ref": theirs(), "tvstore": ours()}
    except RuntimeError as e:
        return {"kind": kind, "tasks": tasks, "codec": codec, "error": str(e).strip().splitlines()[-1]}


# ---- driver -------------------------------------------------------------------------------------


def home_name(codec: str) -> str:
    return "home-" + codec.replace(":", "_").replace("=", "").replace(",", "_")


def prepare(work: Path, cfg: dict, tasks: int, codecs: list[str]) -> dict[str, Path]:
    """Base + ``tasks`` fine-tunes as checkpoints, and one SQLite registry per codec holding them all."""
    models = work / "models"
    if not (models / "base").exists():
        write_model(models / "base", cfg, None)
    for t in range(tasks):
        if not (models / f"ft{t}").exists():
            write_model(models / f"ft{t}", cfg, t)
    homes = {codec: work / home_name(codec) for codec in codecs}
    for codec, home in homes.items():
        push_all(home, models, tasks, codec)
    return homes


def push_all(home: Path, models: Path, tasks: int, codec: str, database_url: str = "") -> None:
    if (home / ".complete").exists() and not database_url:
        return
    with open_registry(str(home), database_url) as reg:
        reg.init()
        reg.add_base("base", models / "base")
        for t in range(tasks):
            reg.push(f"ft{t}", models / f"ft{t}", base="base", codec=codec)
    if not database_url:
        (home / ".complete").touch()


def pg_schema(work: Path, create: bool) -> str:
    """A private schema in the test database for this work folder: (re)created, or dropped."""
    return common.pg_schema("bench_merge_" + hashlib.sha256(str(work.resolve()).encode()).hexdigest()[:12], create)


def mergekit_yaml(method: str, n: int) -> str:
    models = [{"model": f"ft{t}", "parameters": dict(RECIPES[method])} for t in range(n)]
    return yaml.safe_dump({"merge_method": method, "base_model": "base", "models": models, "dtype": "float32"})


def vector_blob_files(home: Path, refs: list[str]) -> list[Path]:
    """The database plus the blobs of the base and of ``refs`` only (what a merge of them reads)."""
    from tvstore.db.queries import get_full_base

    paths: set[Path] = set()
    with open_registry(str(home)) as reg:
        for ref in refs:
            vector = reg.delta_tensors(ref)
            for name in vector.names():
                for comp in vector.components(name):
                    paths.add(reg.blobs.path(comp.blob))
                    if comp.mask_blob:
                        paths.add(reg.blobs.path(comp.mask_blob))
            with reg.session() as session:
                base = get_full_base(session, vector.vector.base_id)
                paths.update(reg.blobs.path(t.blob_digest) for t in base.tensors)
                paths.update(reg.blobs.path(f.blob_digest) for f in base.files)
    return sorted(paths) + [home / "registry.db"]


def sweep(a, work: Path, homes: dict[str, Path], pg: str) -> list[dict]:
    """mergekit vs tvstore for every method, task count and codec (and PostgreSQL for the first codec)."""
    models, out, rows = work / "models", work / "out", []
    for method in a.methods.split(","):
        for n in a.task_counts:
            recipe = work / f"{method}-{n}.yml"
            recipe.write_text(mergekit_yaml(method, n))
            mk_inputs = files_under(models / "base", *[models / f"ft{t}" for t in range(n)])
            mk = measure(["mergekit", str(work), str(recipe), str(out / "mk")], mk_inputs, a.repeat, out / "mk")
            variants = [(codec, homes[codec], "") for codec in a.codecs]
            if pg:
                variants.append((a.codecs[0] + " (PostgreSQL)", homes[a.codecs[0]], pg))
            for label, home, url in variants:
                inputs = vector_blob_files(home, [f"ft{t}" for t in range(n)])
                args = ["tvstore", str(home), str(recipe), str(out / "tv"), url]
                rows.append(row(method, n, label, lambda: mk, lambda: measure(args, inputs, a.repeat, out / "tv")))
                print(f"  {method} n={n} {label}: done", flush=True)
    return rows


def rebuild_rows(a, work: Path, homes: dict[str, Path]) -> list[dict]:
    """Rebuilding ft0 from each registry vs safetensors ``load_file`` of its full checkpoint."""
    ckpt = work / "models" / "ft0"
    load = measure(["load-full", str(ckpt)], files_under(ckpt), a.repeat)
    rows = []
    for codec in a.codecs:
        inputs = vector_blob_files(homes[codec], ["ft0"])
        rows.append(row("rebuild (memory)", 1, codec, lambda: load,
                        lambda: measure(["rebuild", str(homes[codec]), "ft0"], inputs, a.repeat)))
        out = work / "out" / "pull"
        rows.append(row("pull --checkpoint", 1, codec, lambda: load,
                        lambda: measure(["pull", str(homes[codec]), "ft0", str(out)], inputs, a.repeat, out)))
    return rows


def earlier_sweep(results: Path) -> list[dict]:
    """With --skip-sweep, the merge rows of the last full run are kept in the results."""
    path = results.with_suffix(".json")
    if not path.exists():
        return []
    return [r for r in json.loads(path.read_text())["rows"] if r["kind"] in RECIPES]


def largest_tensor_mib(cfg: dict) -> float:
    return max(torch.Size(s).numel() for _, s in llama_shapes(cfg)) * 4 / 2**20


def scale_rows(work: Path, cfg: dict, label: str) -> list[dict]:
    """Peak RSS of push, pull --checkpoint and a 2-way merge (lossless), for the flat-memory check."""
    models, home = work / "models", work / "home-scale"
    for t, seed in (("base", None), ("ft0", 0), ("ft1", 1)):
        if not (models / t).exists():
            write_model(models / t, cfg, seed)
    shutil.rmtree(home, ignore_errors=True)
    with open_registry(str(home)) as reg:
        reg.init()
        reg.add_base("base", models / "base")
    rows = []
    for t in ("ft0", "ft1"):
        rows.append({"step": f"push {t}", **child("push", str(home), t, str(models / t))})
    rows.append({"step": "pull --checkpoint ft0", **child("pull", str(home), "ft0", str(work / "out"), out=work / "out")})
    recipe = work / "ta-2.yml"
    recipe.write_text(mergekit_yaml("task_arithmetic", 2))
    rows.append({"step": "merge task_arithmetic n=2",
                 **child("tvstore", str(home), str(recipe), str(work / "out"), out=work / "out")})
    params = sum(torch.Size(s).numel() for _, s in llama_shapes(cfg))
    for r in rows:
        r.update(model=label, params=params, largest_mib=largest_tensor_mib(cfg))
    return rows


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--hidden", type=int, default=MODEL["hidden"])
    ap.add_argument("--layers", type=int, default=MODEL["layers"])
    ap.add_argument("--vocab", type=int, default=MODEL["vocab"])
    ap.add_argument("--tasks", default="2,4,8")
    ap.add_argument("--methods", default="task_arithmetic,ties")
    ap.add_argument("--codecs", default="lossless,quant:bits=4")
    ap.add_argument("--repeat", type=int, default=2, help="warm runs per measurement (after one cold run)")
    ap.add_argument("--postgres", action="store_true", help="also merge from the registry with metadata in PostgreSQL")
    ap.add_argument("--quick", action="store_true", help="tiny model, 2 tasks: checks the harness")
    ap.add_argument("--big", action="store_true",
                    help="also the flat-memory check on a ~1.2B-parameter base (hidden 2048, 18 layers): ~40 GB disk")
    ap.add_argument("--skip-sweep", action="store_true",
                    help="only the rebuild rows (and --big); merge rows are kept from the last results file")
    ap.add_argument("--results", type=Path, default=None,
                    help="writes <results>.md and .json (default: results/merge; with --quick, WORK/merge-quick)")
    a = ap.parse_args()
    if a.quick:
        a.hidden, a.layers, a.vocab, a.tasks, a.repeat = 64, 2, 256, "2", 1
    a.results = a.results or results_path("merge", a.work, a.quick)
    a.task_counts = [int(x) for x in a.tasks.split(",")]
    a.codecs = a.codecs.split(",")
    return a


MODEL = {"hidden": 512, "layers": 4, "vocab": 8000}  # ~25M parameters, the default
BIG = {"hidden": 2048, "layers": 18, "vocab": 8000}


def main() -> None:
    a = parse_args()
    before = machine.snapshot(settle=True)
    cfg = llama_config(a.hidden, a.layers, a.vocab)
    params = sum(torch.Size(s).numel() for _, s in llama_shapes(cfg))
    a.work.mkdir(parents=True, exist_ok=True)
    homes = prepare(a.work, cfg, 1 if a.skip_sweep else max(a.task_counts), a.codecs)
    pg = ""
    if a.postgres and not a.skip_sweep:
        pg = pg_schema(a.work, create=True)
        push_all(homes[a.codecs[0]], a.work / "models", max(a.task_counts), a.codecs[0], pg)
    model = f"{params / 1e6:.1f}M parameters ({params * 4 / 2**20:.0f} MiB fp32), largest tensor {largest_tensor_mib(cfg):.0f} MiB"
    print(f"model: {model}", flush=True)
    rows = earlier_sweep(a.results) if a.skip_sweep else sweep(a, a.work, homes, pg)
    if pg:
        pg_schema(a.work, create=False)
    rows += rebuild_rows(a, a.work, homes)
    for r in rows:
        if "work_anon_mib" in r.get("tvstore", {}):
            r["work_over_bound"] = work_bound(r, largest_tensor_mib(cfg))
    scale = []
    if a.big:
        scale = scale_rows(a.work / "scale-small", cfg, "small")
        scale += scale_rows(a.work / "scale-big", llama_config(**BIG), "big")
    host = machine.finish(before)
    text = (f"# Merge and rebuild benchmark\n\n{machine.describe(host)}\n\nCommand: `python {' '.join(sys.argv)}`\n\n"
            + report(rows, scale, model))
    print(text)
    a.results.parent.mkdir(parents=True, exist_ok=True)
    a.results.with_suffix(".md").write_text(text)
    a.results.with_suffix(".json").write_text(json.dumps({"model": model, "machine": host, "rows": rows, "scale": scale}, indent=2))


def anon(m: dict) -> str:
    return f"{m['peak_anon_mib']:.0f}" if m.get("peak_anon_mib") else "-"


def work_bound(r: dict, largest_mib: float) -> float:
    """tvstore's own working memory in a row over the design's bound, (inputs + 2) x the largest tensor."""
    return r["tvstore"]["work_anon_mib"] / ((r["tasks"] + 2) * largest_mib)


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f}"


def report(rows: list[dict], scale: list[dict], model: str) -> str:
    """Markdown tables: merges and rebuilds (ratios are tvstore / reference), then the flat-memory check.

    The last column is tvstore's peak anonymous memory above its start (after the imports, so the
    interpreter and torch are not counted) over the design's bound, (inputs + 2) x the largest tensor (fp32);
    at most 1 meets it."""
    lines = [f"Model: {model}. Cold = inputs evicted from the page cache; warm = median of repeats.", "",
             "| what | n | codec | ref cold s | tv cold s | ref warm s | tv warm s | time x (warm) | time x (cold) "
             "| ref RSS MiB | tv RSS MiB | RSS x | ref anon MiB | tv anon MiB | ref read MiB | tv read MiB "
             "| ref input MiB | tv input MiB | tv anon above start / ((n+2) x largest) |",
             "|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['kind']} | {r['tasks']} | {r['codec']} | FAILED: {r['error']} |")
            continue
        mk, tv = r["ref"], r["tvstore"]
        bound = f"{r['work_over_bound']:.2f}" if "work_over_bound" in r else "-"
        lines.append(
            f"| {r['kind']} | {r['tasks']} | {r['codec']} | {mk['cold_s']:.2f} | {tv['cold_s']:.2f} | "
            f"{mk['warm_s']:.2f} | {tv['warm_s']:.2f} | {tv['warm_s'] / mk['warm_s']:.2f} | "
            f"{tv['cold_s'] / mk['cold_s']:.2f} | {mk['peak_rss_mib']:.0f} | {tv['peak_rss_mib']:.0f} | "
            f"{tv['peak_rss_mib'] / mk['peak_rss_mib']:.2f} | {anon(mk)} | {anon(tv)} | "
            f"{mib(mk['read_bytes'])} | {mib(tv['read_bytes'])} | "
            f"{mib(mk['input_bytes'])} | {mib(tv['input_bytes'])} | {bound} |")
    lines.append("")
    lines.append("Reference: mergekit `run_merge` from full fp32 checkpoints for merges; "
                 "`safetensors.torch.load_file` of the full fine-tuned checkpoint for rebuilds.")
    if scale:
        lines += ["", "Flat memory (tvstore, lossless, one child process per step):", "",
                  "| model | params | largest tensor MiB | step | wall s | peak RSS MiB | peak anon MiB "
                  "| anon / largest tensor |",
                  "|---|--:|--:|---|--:|--:|--:|--:|"]
        for s in scale:
            peak = s.get("peak_anon_mib", 0.0)
            lines.append(f"| {s['model']} | {s['params'] / 1e6:,.0f}M | {s['largest_mib']:.0f} | {s['step']} | "
                         f"{s['wall_s']:.1f} | {s['peak_rss_mib']:.0f} | {peak:.0f} | {peak / s['largest_mib']:.1f} |")
        lines += ["", "Peak RSS (VmHWM) counts the pages of mmap'd checkpoint files a push reads (safetensors "
                  "maps the whole file); peak anon (RssAnon, sampled every 20 ms) is the process's own memory."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        CHILDREN[sys.argv[2]](*sys.argv[3:])
    else:
        main()
