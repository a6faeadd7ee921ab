"""One command from a clean cache to the tables, JSON and plot (issue 4).

    python -m benchmarks.eval.harness            # MiniLM, three tasks (~14 min on 2 idle cores, clean cache)
    python -m benchmarks.eval.harness --quick    # tiny random BERT, a few dozen examples (seconds)

Steps: fine-tune each task (cached), push every fine-tune into a fresh
registry under every codec setting (``Registry.push``; RTVQ with
``Registry.pack`` over the lossless vectors), rebuild each with
``pull_checkpoint`` and score it (individual table), export each lossless
vector as a LoRA adapter per rank and score it through peft (LoRA table),
merge the vectors from fp32 and from each chosen codec family's smallest
setting (``Registry.merge`` for task arithmetic / TIES / consensus,
``Registry.pack`` + ``pull_checkpoint`` for TALL and EMR, ``pull_per_task``
for task arithmetic with per-task heads: merge table), plot accuracy against footprint, write
``eval_results.json``, ``eval_accuracy_vs_bytes.png`` and ``eval_tables.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
from transformers import BertConfig  # noqa: E402

from benchmarks.eval.data import Task, load_tasks  # noqa: E402
from benchmarks.eval.evaluate import Scorer, SplitCache  # noqa: E402
from benchmarks.eval.finetune import REPO_ROOT, base_model_dir, finetune_all, limit_threads  # noqa: E402
from benchmarks.eval.merging import BaseModelTensors, head, merged_encoder  # noqa: E402
from benchmarks.eval.model import load_encoder, load_head, load_tokenizer, read_tensors  # noqa: E402
from benchmarks.eval.plot import plot_accuracy_vs_bytes  # noqa: E402
from benchmarks.eval.report import Row, fp32_table, individual_table, lora_table, merge_table  # noqa: E402
from benchmarks.eval.serving import lora_row, per_task_merge  # noqa: E402
from benchmarks.eval.settings import FP32, HarnessSettings, MergeSetting, quick_settings  # noqa: E402
from benchmarks.eval.store import StoredSet, float_names, open_fresh_registry, pack_set, push_set  # noqa: E402
from benchmarks.eval.tiny import make_tiny_base  # noqa: E402
from tvstore.registry import Registry  # noqa: E402

RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
CACHE_DIR = REPO_ROOT / "benchmarks" / ".cache"


@dataclass
class Context:
    """Everything the steps share: tasks, base, fine-tunes, registry, tokenized splits."""

    settings: HarnessSettings
    tasks: dict[str, Task]
    base_dir: Path
    finetunes: dict[str, Path]
    registry: Registry
    base: BaseModelTensors
    score: Scorer
    work_dir: Path
    reference: dict[str, dict[str, float]] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    timings: dict[str, float] = field(default_factory=dict)

    def log(self, message: str) -> None:
        print(f"[{time.perf_counter() - self.started:7.1f}s] {message}", file=sys.stderr, flush=True)

    def mark(self, phase: str, since: float) -> float:
        now = time.perf_counter()
        self.timings[phase] = round(now - since, 1)
        return now


# ---- setup ------------------------------------------------------------------------------


def prepare(settings: HarnessSettings, work_dir: Path, finetune_cache: Path, base_dir: Path | None) -> Context:
    """Tasks, base (tiny one in quick mode), cached fine-tunes, a fresh registry."""
    limit_threads()
    started = time.perf_counter()
    tasks = load_tasks(list(settings.tasks), settings.finetune.sizes, settings.finetune.seed)
    if base_dir is None:
        base_dir = base_model_dir()
    elif not (base_dir / "model.safetensors").exists():  # quick mode: build the tiny base once
        make_tiny_base(base_dir, (text for task in tasks.values() for text, _ in task.train))
    finetunes = finetune_all(tasks, base_dir, settings.finetune, finetune_cache)
    registry = open_fresh_registry(work_dir / "registry", base_dir)
    config = BertConfig.from_pretrained(str(base_dir), local_files_only=True)
    base = BaseModelTensors(read_tensors(base_dir), config, float_names(base_dir))
    splits = SplitCache(tasks, load_tokenizer(base_dir), settings.finetune.length_for)
    ctx = Context(settings, tasks, base_dir, finetunes, registry, base, Scorer(splits), work_dir, started=started)
    ctx.mark("finetune_and_setup", started)
    return ctx


def reference_accuracy(ctx: Context) -> dict[str, dict[str, float]]:
    """Test and validation accuracy of the fp32 fine-tunes as trained (the 100%)."""
    out = {}
    for task, ft_dir in ctx.finetunes.items():
        encoder, layer = load_encoder(ft_dir), load_head(ft_dir)
        out[task] = {split: ctx.score(encoder, layer, task, split) for split in ("test", "val")}
    return out


# ---- storing and the individual table --------------------------------------------------


def store_all(ctx: Context) -> dict[str, StoredSet]:
    """Every codec setting's stored vectors; lossless first (packs re-encode its versions)."""
    stored: dict[str, StoredSet] = {}
    for setting in sorted(ctx.settings.codecs, key=lambda s: s.spec != FP32):
        since = time.perf_counter()
        if not setting.group:
            stored[setting.spec] = push_set(ctx.registry, setting, ctx.finetunes)
        else:
            stored[setting.spec] = pack_set(ctx.registry, setting.spec, stored[FP32].refs)
        ctx.log(f"stored {setting.spec} ({time.perf_counter() - since:.1f}s)")
    return stored


def pulled(ctx: Context, ref: str) -> tuple[Any, Any]:
    """Encoder and head of ``ref`` rebuilt by ``pull_checkpoint`` (base + stored vector, as users get it)."""
    out = ctx.work_dir / "pull"
    shutil.rmtree(out, ignore_errors=True)
    ctx.registry.pull_checkpoint(ref, out)
    try:
        return load_encoder(out), load_head(out)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def rebuilt_accuracy(ctx: Context, stored: StoredSet, task: str) -> float:
    """Test accuracy of the fine-tune rebuilt from the registry."""
    encoder, layer = pulled(ctx, stored.refs[task])
    return ctx.score(encoder, layer, task, "test")


def _mean(values: Any) -> float:
    values = list(values)
    return sum(values) / len(values)


def individual_row(ctx: Context, spec: str, stored: StoredSet, raw_bytes_per_param: float) -> Row:
    """One codec's row: per-task rebuilt accuracy, retained fraction, footprint, error."""
    acc = {task: rebuilt_accuracy(ctx, stored, task) for task in ctx.tasks}
    retained = {task: acc[task] / ctx.reference[task]["test"] for task in ctx.tasks}
    bpp = _mean(stored.stored_bytes[t] / stored.num_params[t] for t in ctx.tasks)
    return {
        "codec": spec, "path": stored.path, "refs": dict(stored.refs), "accuracy": acc,
        "retained": retained, "avg_accuracy": _mean(acc.values()), "avg_retained": _mean(retained.values()),
        "min_retained": min(retained.values()), "bytes_per_param": bpp, "ratio_vs_fp32": raw_bytes_per_param / bpp,
        "rel_l2": _mean(stored.rel_l2.values()), "cosine": _mean(stored.cosine.values()),
    }


def individual_rows(ctx: Context, stored: dict[str, StoredSet]) -> list[Row]:
    raw = float(ctx.base.tensors[ctx.base.float_names[0]].element_size())
    rows = []
    for setting in ctx.settings.codecs:
        since = time.perf_counter()
        rows.append(individual_row(ctx, setting.spec, stored[setting.spec], raw))
        ctx.log(f"individual {setting.spec}: avg {rows[-1]['avg_accuracy']:.4f} ({time.perf_counter() - since:.1f}s)")
    return rows


def lora_rows(ctx: Context, lossless: StoredSet) -> list[Row]:
    """One row per LoRA rank: every task's lossless vector exported and scored through peft."""
    raw = float(ctx.base.tensors[ctx.base.float_names[0]].element_size())
    reference = {task: ctx.reference[task]["test"] for task in ctx.tasks}
    rows = []
    for rank in ctx.settings.lora_ranks:
        since = time.perf_counter()
        rows.append(lora_row(ctx.registry, lossless, rank, ctx.base_dir, ctx.work_dir, ctx.score, reference, raw))
        ctx.log(f"LoRA rank {rank}: avg {rows[-1]['avg_accuracy']:.4f} ({time.perf_counter() - since:.1f}s)")
    return rows


# ---- merges -------------------------------------------------------------------------------


def merge_codecs(ctx: Context, rows: list[Row]) -> list[str]:
    """fp32, then per codec family its smallest-footprint setting."""
    chosen = [FP32]
    for family in ctx.settings.merge_families:
        ok = [r for r in rows if r["codec"].partition(":")[0] == family]
        if ok:
            chosen.append(min(ok, key=lambda r: r["bytes_per_param"])["codec"])
    return chosen


def scores(ctx: Context, encoders: dict[str, Any], heads: dict[str, Any], split: str) -> dict[str, float]:
    return {task: ctx.score(encoders[task], heads[task], task, split) for task in ctx.tasks}


def recipe_merge(ctx: Context, setting: MergeSetting, refs: dict[str, str], heads: dict[str, Any],
                 chosen: dict[str, float]) -> tuple[dict[str, float], float]:
    """``Registry.merge`` at each grid coefficient; the best on validation (first on ties) is scored on test.

    A one-point grid (or a coefficient reused from another method) skips
    validation; the encoder built for the winning coefficient is reused for test.
    """
    grid = setting.grid or ((chosen[setting.lambda_from],) if setting.lambda_from in chosen else (1.0,))
    best: tuple[float, float, Any] | None = None
    for coefficient in grid:
        encoder = merged_encoder(ctx.registry, ctx.base, setting, refs, coefficient)
        if len(grid) == 1:
            best = (coefficient, 0.0, encoder)
            break
        avg = _mean(scores(ctx, {t: encoder for t in ctx.tasks}, heads, "val").values())
        if best is None or avg > best[1]:
            best = (coefficient, avg, encoder)
    assert best is not None
    coefficient, _, encoder = best
    chosen[setting.label] = coefficient
    return scores(ctx, {t: encoder for t in ctx.tasks}, heads, "test"), coefficient


def pack_merge(ctx: Context, setting: MergeSetting, refs: dict[str, str], heads: dict[str, Any]) -> dict[str, float]:
    """TALL/EMR: ``Registry.pack`` over the codec's vectors, each task rebuilt with ``pull_checkpoint``."""
    packed = pack_set(ctx.registry, setting.method, refs, **setting.params)
    return {task: ctx.score(pulled(ctx, packed.refs[task])[0], heads[task], task, "test") for task in ctx.tasks}


def merge_rows_for(ctx: Context, spec: str, stored: StoredSet) -> list[Row]:
    """Every merge method over one codec's vectors (exact refs, so packs of the same names never interfere)."""
    heads = {task: head(ctx.registry.delta_tensors(ref)) for task, ref in stored.refs.items()}
    chosen: dict[str, float] = {}
    rows = []
    for setting in ctx.settings.merges:
        since = time.perf_counter()
        coefficient = None
        if setting.kind == "pack":
            acc = pack_merge(ctx, setting, stored.refs, heads)
        elif setting.kind == "per_task":
            coefficient = chosen[setting.lambda_from]
            acc = per_task_merge(ctx.registry, setting, stored, coefficient, ctx.work_dir, ctx.score)
        else:
            acc, coefficient = recipe_merge(ctx, setting, stored.refs, heads, chosen)
        normalized = {task: acc[task] / ctx.reference[task]["test"] for task in ctx.tasks}
        rows.append({
            "method": setting.label, "codec": spec, "lambda": coefficient, "accuracy": acc,
            "avg_accuracy": _mean(acc.values()), "normalized": normalized, "avg_normalized": _mean(normalized.values()),
        })
        ctx.log(f"merge {setting.label} from {spec}: avg {rows[-1]['avg_accuracy']:.4f} ({time.perf_counter() - since:.1f}s)")
    return rows


def merge_rows(ctx: Context, stored: dict[str, StoredSet], codecs: list[str],
               checkpoint: Callable[[list[Row]], None] = lambda rows: None) -> list[Row]:
    """The merge table: every method from fp32 and from each chosen codec, with ratio to the fp32 merge.

    ``checkpoint`` is called after each codec's rows, so a long run that dies
    late still leaves the rows it measured on disk.
    """
    rows: list[Row] = []
    for spec in codecs:
        since = time.perf_counter()
        rows += merge_rows_for(ctx, spec, stored[spec])
        ctx.mark(f"merges from {spec}", since)
        add_vs_fp32(rows)
        checkpoint(rows)
    return rows


def add_vs_fp32(rows: list[Row]) -> None:
    """Each merge's average accuracy relative to the same method merged from fp32 vectors."""
    fp32 = {r["method"]: r["avg_accuracy"] for r in rows if r["codec"] == FP32}
    for row in rows:
        if fp32.get(row["method"]):
            row["vs_fp32_merge"] = row["avg_accuracy"] / fp32[row["method"]]


# ---- the run ----------------------------------------------------------------------------------


def summary(individual: list[Row], merges: list[Row]) -> dict[str, Any]:
    """The numbers the issue's closing note quotes: each family at its smallest footprint, each merge."""
    smallest: dict[str, Row] = {}
    for row in individual:
        family = row["codec"].partition(":")[0]
        if family not in smallest or row["bytes_per_param"] < smallest[family]["bytes_per_param"]:
            smallest[family] = row
    return {
        "smallest_per_family": {
            f: {k: r[k] for k in ("codec", "bytes_per_param", "avg_accuracy", "avg_retained", "min_retained")}
            for f, r in smallest.items()
        },
        "merges": {f"{r['method']} <- {r['codec']}": r.get("avg_accuracy") for r in merges},
    }


def run(settings: HarnessSettings, out_dir: Path, work_dir: Path, finetune_cache: Path,
        base_dir: Path | None = None) -> dict[str, Any]:
    """The whole harness; returns what it writes to ``out_dir/eval_results.json``."""
    work_dir.mkdir(parents=True, exist_ok=True)
    ctx = prepare(settings, work_dir, finetune_cache, base_dir)
    lora: list[Row] = []

    def results(individual: list[Row], merges: list[Row], complete: bool) -> dict[str, Any]:
        ctx.timings["total"] = round(time.perf_counter() - ctx.started, 1)
        return {
            "settings": asdict(settings), "tasks": list(ctx.tasks), "fp32": ctx.reference, "complete": complete,
            "individual": individual, "lora_export": lora, "merges": merges, "summary": summary(individual, merges),
            "timings_s": dict(ctx.timings), "torch_threads": torch.get_num_threads(),
            "evaluations": {"run": ctx.score.evaluated, "reused_identical_weights": ctx.score.reused},
        }

    try:
        since = time.perf_counter()
        ctx.reference = reference_accuracy(ctx)
        ctx.log(f"fp32 fine-tunes: {ctx.reference}")
        stored = store_all(ctx)
        since = ctx.mark("push", since)
        individual = individual_rows(ctx, stored)
        since = ctx.mark("individual", since)
        lora += lora_rows(ctx, stored[FP32])
        since = ctx.mark("lora_export", since)
        write_outputs(results(individual, [], False), out_dir)
        merges = merge_rows(ctx, stored, merge_codecs(ctx, individual),
                            checkpoint=lambda rows: write_outputs(results(individual, rows, False), out_dir))
        ctx.mark("merges", since)
    finally:
        ctx.registry.close()
    final = results(individual, merges, True)
    write_outputs(final, out_dir)
    return final


def write_outputs(results: dict[str, Any], out_dir: Path) -> None:
    """eval_results.json, eval_accuracy_vs_bytes.png, eval_tables.md (prefixed: other benchmarks share the folder)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "eval_results.json").write_text(json.dumps(results, indent=2, default=str))
    fp32_avg = _mean(v["test"] for v in results["fp32"].values())
    title = f"Rebuilt fine-tunes ({', '.join(results['tasks'])}): accuracy vs footprint"
    plot_accuracy_vs_bytes(results["individual"], fp32_avg, out_dir / "eval_accuracy_vs_bytes.png", title)
    (out_dir / "eval_tables.md").write_text(render(results) + "\n")


def render(results: dict[str, Any]) -> str:
    """All tables as text (printed, and saved as tables.md for the README)."""
    tasks = results["tasks"]
    parts = [
        "## fp32 fine-tunes (accuracy)", fp32_table(results["fp32"], tasks),
        "## Individual: rebuilt fine-tune accuracy per codec", individual_table(results["individual"], tasks),
        "## Merges (normalized = merged / fp32 individual fine-tune)", merge_table(results["merges"], tasks),
    ]
    if results.get("lora_export"):
        parts[4:4] = ["## LoRA export (Registry.to_lora, merged back by peft)", lora_table(results["lora_export"], tasks)]
    parts.append(f"timings (s): {results['timings_s']}")
    if "evaluations" in results:
        parts.append(f"split evaluations: {results['evaluations']}")
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny random BERT, a few dozen examples (seconds)")
    parser.add_argument("--out", type=Path, help="results folder (default benchmarks/results, quick: .cache/quick/results)")
    parser.add_argument("--work", type=Path, help="scratch folder for the registry (default under benchmarks/.cache)")
    args = parser.parse_args(argv)
    if args.quick:
        work = args.work or CACHE_DIR / "quick"
        results = run(quick_settings(), args.out or work / "results", work, work / "finetunes", base_dir=work / "tiny-base")
    else:
        work = args.work or CACHE_DIR / "harness"
        results = run(HarnessSettings(), args.out or RESULTS_DIR, work, CACHE_DIR / "finetunes")
    print(render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
