"""Merge benchmark: mergekit from full checkpoints vs tvstore from its compressed registry.

For each (method, number of tasks, codec) the same merge runs twice, each in its
own subprocess so peak RSS and disk reads are per tool:

- mergekit (``run_merge``) reading N full fp32 fine-tuned checkpoints;
- tvstore reading the registry (base stored once, N compressed task vectors).

Both write a safetensors directory. Also timed: rebuilding one fine-tune from
the registry vs ``safetensors.torch.load_file`` of the full checkpoint.

Usage::

    python benchmarks/bench_merge.py --work /tmp/bench --quick          # seconds, tiny model
    python benchmarks/bench_merge.py --work /data/bench --hidden 2048 --layers 16 --tasks 2,4,8
    python benchmarks/bench_merge.py --work /data/bench --big            # ~1B-parameter base, 2 tasks

Reported per row: wall seconds, peak RSS (MiB), bytes read from disk
(``/proc/self/io`` read_bytes after imports; 0 when the page cache serves the
files, so drop caches between runs for cold numbers; rchar is in the JSON, but
misses mmap reads such as safetensors'), and the tvstore/mergekit ratios. Fine-tunes are base + seeded noise,
so the absolute compression of lossy codecs is not representative of real
fine-tunes; the time and memory ratios are the point.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import yaml  # noqa: E402

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


def child_start() -> float:
    _IO0.update(io_counters())
    return time.perf_counter()


def child_report(t0: float) -> None:
    io = io_counters()
    rss = peak_rss_mib()
    print(json.dumps({"wall_s": time.perf_counter() - t0, "peak_rss_mib": rss,
                      "read_bytes": io["read_bytes"] - _IO0.get("read_bytes", 0),
                      "rchar": io["rchar"] - _IO0.get("rchar", 0)}))


def run_mergekit(work: str, recipe: str, out: str) -> None:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    t0 = child_start()
    os.chdir(Path(work) / "models")
    config = MergeConfiguration.model_validate(yaml.safe_load(Path(recipe).read_text()))
    run_merge(config, out, MergeOptions(copy_tokenizer=False, write_model_card=False, quiet=True))
    child_report(t0)


def registry_merger(reg, recipe):
    """Bind a recipe to the registry's base and vector sources (what ``Registry.merge`` wraps)."""
    from sqlalchemy import select

    from tvstore.db.models import BaseModel
    from tvstore.merge import Merger
    from tvstore.refs import Ref
    from tvstore.sources import BaseSource

    vectors = [reg.delta_tensors(str(r)) for r in recipe.vectors]
    base_name = recipe.base.name if recipe.base else vectors[0].vector.base.name
    with reg.session() as session:
        row = session.scalar(select(BaseModel).where(BaseModel.name == base_name))
        _ = row.tensors, row.files
    return Merger(recipe.with_base(Ref(base_name)), BaseSource(row, reg.blobs), vectors)


def run_tvstore(home: str, recipe: str, out: str) -> None:
    from tvstore.checkpoint import write_checkpoint_dir
    from tvstore.merge import load_recipe, materialize
    from tvstore.registry import Registry

    t0 = child_start()
    with Registry.open(home=home) as reg:
        merger = registry_merger(reg, load_recipe(Path(recipe)))
        write_checkpoint_dir(Path(out), merger.infos(), materialize(merger), max_shard_bytes=2 * 1024**3)
    child_report(t0)


def run_load_full(ckpt: str) -> None:
    from safetensors.torch import load_file

    t0 = child_start()
    n = sum(t.numel() for f in sorted(Path(ckpt).glob("*.safetensors")) for t in load_file(f).values())
    assert n > 0
    child_report(t0)


def run_rebuild(home: str, ref: str) -> None:
    from tvstore.merge import load_recipe, materialize
    from tvstore.registry import Registry

    t0 = child_start()
    with Registry.open(home=home) as reg:
        merger = registry_merger(reg, load_recipe({"method": "task_arithmetic", "inputs": [ref]}))
        n = sum(t.numel() for _, t in materialize(merger))
    assert n > 0
    child_report(t0)


CHILDREN = {"mergekit": run_mergekit, "tvstore": run_tvstore, "load-full": run_load_full, "rebuild": run_rebuild}


def row(method: str, tasks: int, codec: str, theirs, ours) -> dict:
    """Run both measurements (callables); a failure is recorded in the row rather than ending the run."""
    try:
        return {"method": method, "tasks": tasks, "codec": codec, "mergekit": theirs(), "tvstore": ours()}
    except RuntimeError as e:
        return {"method": method, "tasks": tasks, "codec": codec, "error": str(e).strip().splitlines()[-1]}


def measure(*args: str, out: Path | None = None) -> dict:
    """Run one child; ``out`` (its output directory) is cleared first so reruns work."""
    if out is not None:
        shutil.rmtree(out, ignore_errors=True)
    proc = subprocess.run([sys.executable, __file__, "_child", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{args[0]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- driver -------------------------------------------------------------------------------------


def prepare(work: Path, cfg: dict, tasks: int, codecs: list[str]) -> dict[str, Path]:
    from tvstore.registry import Registry

    models = work / "models"
    if not (models / "base").exists():
        write_model(models / "base", cfg, None)
    for t in range(tasks):
        if not (models / f"ft{t}").exists():
            write_model(models / f"ft{t}", cfg, t)
    homes = {}
    for codec in codecs:
        home = work / ("home-" + codec.replace(":", "_").replace("=", "").replace(",", "_"))
        homes[codec] = home
        if home.exists():
            continue
        with Registry.open(home=home) as reg:
            reg.init()
            reg.add_base("base", models / "base")
            for t in range(tasks):
                reg.push(f"ft{t}", models / f"ft{t}", base="base", codec=codec)
    return homes


def mergekit_yaml(method: str, n: int) -> str:
    models = [{"model": f"ft{t}", "parameters": dict(RECIPES[method])} for t in range(n)]
    return yaml.safe_dump({"merge_method": method, "base_model": "base", "models": models, "dtype": "float32"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--tasks", default="2,4,8")
    ap.add_argument("--methods", default="task_arithmetic,ties")
    ap.add_argument("--codecs", default="lossless,quant:bits=4")
    ap.add_argument("--quick", action="store_true", help="tiny model, 2 tasks: checks the harness")
    ap.add_argument("--big", action="store_true", help="~1B-parameter base (hidden 2048, 18 layers, vocab 32000)")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    a = ap.parse_args()
    if a.quick:
        a.hidden, a.layers, a.vocab, a.tasks = 64, 2, 256, "2"
    if a.big:
        a.hidden, a.layers, a.vocab = 2048, 18, 32000
    cfg = llama_config(a.hidden, a.layers, a.vocab)
    params = sum(torch.Size(s).numel() for _, s in llama_shapes(cfg))
    task_counts = [int(x) for x in a.tasks.split(",")]
    codecs = a.codecs.split(",")
    a.work.mkdir(parents=True, exist_ok=True)
    homes = prepare(a.work, cfg, max(task_counts), codecs)
    print(f"model: {params / 1e6:.1f}M parameters ({params * 4 / 2**20:.0f} MiB fp32)")
    rows = []
    for method in a.methods.split(","):
        for n in task_counts:
            recipe = a.work / f"{method}-{n}.yml"
            recipe.write_text(mergekit_yaml(method, n))
            out = a.work / "out"
            mk_out = out / f"mk-{method}-{n}"
            ref = measure("mergekit", str(a.work), str(recipe), str(mk_out), out=mk_out)
            for codec in codecs:
                tv_out = out / f"tv-{method}-{n}-{homes[codec].name}"
                rows.append(row(method, n, codec, lambda: ref,
                                lambda: measure("tvstore", str(homes[codec]), str(recipe), str(tv_out), out=tv_out)))
    for codec in codecs:
        rows.append(row("rebuild-one", 1, codec, lambda: measure("load-full", str(a.work / "models" / "ft0")),
                        lambda: measure("rebuild", str(homes[codec]), "ft0")))
    report([r for r in rows if "error" not in r])
    for r in rows:
        if "error" in r:
            print(f"{r['method']} n={r['tasks']} {r['codec']}: FAILED: {r['error']}")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=2))


def report(rows: list[dict]) -> None:
    print(f"{'method':16} {'n':>2} {'codec':16} {'mk s':>7} {'tv s':>7} {'time x':>7} "
          f"{'mk MiB':>7} {'tv MiB':>7} {'rss x':>6} {'mk read':>9} {'tv read':>9}")
    for r in rows:
        mk, tv = r["mergekit"], r["tvstore"]
        print(f"{r['method']:16} {r['tasks']:>2} {r['codec']:16} {mk['wall_s']:7.2f} {tv['wall_s']:7.2f} "
              f"{tv['wall_s'] / mk['wall_s']:7.2f} {mk['peak_rss_mib']:7.0f} {tv['peak_rss_mib']:7.0f} "
              f"{tv['peak_rss_mib'] / mk['peak_rss_mib']:6.2f} {mk['read_bytes'] / 2**20:8.1f}M {tv['read_bytes'] / 2**20:8.1f}M")
    print("(rebuild-one: 'mk' columns are safetensors load_file of the full fine-tuned checkpoint)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        CHILDREN[sys.argv[2]](*sys.argv[3:])
    else:
        main()
