"""One command from a clean cache to the tables, JSON and plot (issues 4 and 11).

    python -m benchmarks.eval.harness                 # MiniLM and MPNet, three tasks, seeds 0-2 (hours on 2 cores)
    python -m benchmarks.eval.harness --base minilm   # one base only
    python -m benchmarks.eval.harness --resume        # keep the recorded seeds, run only the missing ones
    python -m benchmarks.eval.harness --quick         # tiny random BERT and MPNet, a few dozen examples (seconds)

For every base and every fine-tune seed, one run: fine-tune each task (cached), push every fine-tune into a fresh
registry under every codec setting (``Registry.push``; RTVQ with
``Registry.pack`` over the lossless vectors), rebuild each with
``pull_checkpoint`` and score it (individual table), export each lossless
vector as a LoRA adapter per rank and score it through peft (LoRA table),
merge the vectors from fp32 and from each chosen codec family's smallest
setting (``Registry.merge`` for task arithmetic / TIES / consensus,
``Registry.pack`` + ``pull_checkpoint`` for TALL and EMR, ``pull_per_task``
for task arithmetic with per-task heads: merge table).  Every score keeps its
per-example outcomes, so ``aggregate`` can report, per base, each row's mean over
seeds with a bootstrap 95% interval, the smallest setting that keeps the target,
and the codec table at fixed bit budgets.  Writes ``eval_results.json``,
``eval_accuracy_vs_bytes.png`` and ``eval_tables.md`` after every finished run.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from benchmarks import machine  # noqa: E402
from benchmarks.eval.aggregate import summarize  # noqa: E402
from benchmarks.eval.bases import base_dir as resolve_base  # noqa: E402
from benchmarks.eval.data import Task, load_tasks  # noqa: E402
from benchmarks.eval.evaluate import Outcome, Scorer, SplitCache  # noqa: E402
from benchmarks.eval.finetune import REPO_ROOT, finetune_all, limit_threads  # noqa: E402
from benchmarks.eval.merging import BaseModelTensors, head, merged_encoder  # noqa: E402
from benchmarks.eval.model import load_config, load_encoder, load_head, load_tokenizer, read_tensors  # noqa: E402
from benchmarks.eval.plot import plot_accuracy_vs_bytes  # noqa: E402
from benchmarks.eval.report import Row, render  # noqa: E402
from benchmarks.eval.serving import lora_row, per_task_merge  # noqa: E402
from benchmarks.eval.settings import FP32, HarnessSettings, MergeSetting, Scope, quick_settings  # noqa: E402
from benchmarks.eval.stats import known_mean, known_min  # noqa: E402
from benchmarks.eval.store import StoredSet, float_names, open_fresh_registry, pack_set, push_set  # noqa: E402
from tvstore.registry import Registry  # noqa: E402

RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
CACHE_DIR = REPO_ROOT / "benchmarks" / ".cache"


@dataclass
class Context:
    """Everything one (base, seed) run's steps share: tasks, base, fine-tunes, registry, tokenized splits."""

    settings: HarnessSettings
    base_name: str
    seed: int
    tasks: dict[str, Task]
    base_dir: Path
    finetunes: dict[str, Path]
    registry: Registry
    base: BaseModelTensors
    score: Scorer
    work_dir: Path
    reference: dict[str, dict[str, Outcome]] = field(default_factory=dict)
    zero: dict[str, Outcome] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def scope(self) -> Scope:
        return self.settings.scope_for(self.base_name)

    def log(self, message: str) -> None:
        where = f"{self.base_name} seed {self.seed}"
        print(f"[{time.perf_counter() - self.started:7.1f}s] {where}: {message}", file=sys.stderr, flush=True)

    def mark(self, phase: str, since: float) -> float:
        now = time.perf_counter()
        self.timings[phase] = round(now - since, 1)
        return now


# ---- setup ------------------------------------------------------------------------------


def prepare(settings: HarnessSettings, tasks: dict[str, Task], base_name: str, seed: int, work_dir: Path,
            cache_dir: Path) -> Context:
    """The base, this seed's cached fine-tunes of ``tasks`` (fixed splits), a fresh registry."""
    started = time.perf_counter()
    length_for = settings.finetune.length_for
    base_dir = resolve_base(base_name, cache_dir / "bases", (text for t in tasks.values() for text, _ in t.train))
    finetune = replace(settings.finetune, seed=seed)
    finetunes = finetune_all(tasks, base_dir, finetune, cache_dir / "finetunes")
    registry = open_fresh_registry(work_dir / base_name / f"seed{seed}" / "registry", base_dir)
    base = BaseModelTensors(read_tensors(base_dir), load_config(base_dir), float_names(base_dir))
    splits = SplitCache(tasks, load_tokenizer(base_dir), length_for, settings.scope_for(base_name).test_examples)
    ctx = Context(settings, base_name, seed, tasks, base_dir, finetunes, registry, base, Scorer(splits),
                  work_dir / base_name / f"seed{seed}", started=started)
    ctx.mark("finetune_and_setup", started)
    return ctx


def reference_outcomes(ctx: Context) -> dict[str, dict[str, Outcome]]:
    """Outcomes of the fp32 fine-tunes as trained (the 100%): test, and validation where merges choose on it."""
    out = {}
    for task, ft_dir in ctx.finetunes.items():
        encoder, layer = load_encoder(ft_dir), load_head(ft_dir)
        out[task] = {split: ctx.score(encoder, layer, task, split) for split in ctx.scope.splits()}
    return out


def zero_outcomes(ctx: Context) -> dict[str, Outcome]:
    """Test outcomes with tau zeroed: the base encoder with each fine-tune's own head (the 0% of "gain kept")."""
    encoder = ctx.base.encoder_from_theta({})
    return {task: ctx.score(encoder, load_head(ft_dir), task, "test") for task, ft_dir in ctx.finetunes.items()}


# ---- storing and the individual table --------------------------------------------------


def store_all(ctx: Context) -> dict[str, StoredSet]:
    """Every codec setting's stored vectors; lossless first (packs re-encode its versions)."""
    stored: dict[str, StoredSet] = {}
    for setting in sorted(ctx.scope.codecs, key=lambda s: s.spec != FP32):
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


def rebuilt_outcome(ctx: Context, stored: StoredSet, task: str) -> Outcome:
    """Test outcomes of the fine-tune rebuilt from the registry."""
    encoder, layer = pulled(ctx, stored.refs[task])
    return ctx.score(encoder, layer, task, "test")


def _fraction(value: float, reference: float) -> float | None:
    """``value / reference``; ``None`` when the fp32 fine-tune got nothing right (a tiny quick-mode model)."""
    return value / reference if reference else None


def _mean(values: Any) -> float:
    values = list(values)
    return sum(values) / len(values)


def individual_row(ctx: Context, spec: str, stored: StoredSet, raw_bytes_per_param: float) -> Row:
    """One codec's row: per-task rebuilt accuracy and outcomes, retained fraction, footprint, error."""
    outcomes = {task: rebuilt_outcome(ctx, stored, task) for task in ctx.tasks}
    acc = {task: o.accuracy for task, o in outcomes.items()}
    retained = {task: _fraction(acc[task], ctx.reference[task]["test"].accuracy) for task in ctx.tasks}
    bpp = _mean(stored.stored_bytes[t] / stored.num_params[t] for t in ctx.tasks)
    return {
        "codec": spec, "path": stored.path, "refs": dict(stored.refs), "accuracy": acc,
        "correct": {task: o.correct for task, o in outcomes.items()},
        "retained": retained, "avg_accuracy": _mean(acc.values()), "avg_retained": known_mean(retained.values()),
        "min_retained": known_min(retained.values()), "bytes_per_param": bpp, "ratio_vs_fp32": raw_bytes_per_param / bpp,
        "rel_l2": _mean(stored.rel_l2.values()), "cosine": _mean(stored.cosine.values()),
    }


def individual_rows(ctx: Context, stored: dict[str, StoredSet]) -> list[Row]:
    raw = float(ctx.base.tensors[ctx.base.float_names[0]].element_size())
    rows = []
    for setting in ctx.scope.codecs:
        since = time.perf_counter()
        rows.append(individual_row(ctx, setting.spec, stored[setting.spec], raw))
        ctx.log(f"individual {setting.spec}: avg {rows[-1]['avg_accuracy']:.4f} ({time.perf_counter() - since:.1f}s)")
    return rows


def lora_rows(ctx: Context, lossless: StoredSet) -> list[Row]:
    """One row per LoRA rank: every task's lossless vector exported and scored through peft."""
    raw = float(ctx.base.tensors[ctx.base.float_names[0]].element_size())
    reference = {task: ctx.reference[task]["test"].accuracy for task in ctx.tasks}
    rows = []
    for rank in ctx.scope.lora_ranks:
        since = time.perf_counter()
        rows.append(lora_row(ctx.registry, lossless, rank, ctx.base_dir, ctx.work_dir, ctx.score, reference, raw))
        ctx.log(f"LoRA rank {rank}: avg {rows[-1]['avg_accuracy']:.4f} ({time.perf_counter() - since:.1f}s)")
    return rows


# ---- merges -------------------------------------------------------------------------------


def merge_codecs(ctx: Context) -> list[str]:
    """fp32, then the scope's merge sources (stored settings it measured)."""
    return [FP32, *ctx.scope.merge_sources]


def scores(ctx: Context, encoders: dict[str, Any], heads: dict[str, Any], split: str) -> dict[str, Outcome]:
    return {task: ctx.score(encoders[task], heads[task], task, split) for task in ctx.tasks}


def recipe_merge(ctx: Context, setting: MergeSetting, refs: dict[str, str], heads: dict[str, Any],
                 chosen: dict[str, float]) -> tuple[dict[str, Outcome], float]:
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
        avg = _mean(o.accuracy for o in scores(ctx, {t: encoder for t in ctx.tasks}, heads, "val").values())
        if best is None or avg > best[1]:
            best = (coefficient, avg, encoder)
    assert best is not None
    coefficient, _, encoder = best
    chosen[setting.label] = coefficient
    return scores(ctx, {t: encoder for t in ctx.tasks}, heads, "test"), coefficient


def pack_merge(ctx: Context, setting: MergeSetting, refs: dict[str, str], heads: dict[str, Any]) -> dict[str, Outcome]:
    """TALL/EMR: ``Registry.pack`` over the codec's vectors, each task rebuilt with ``pull_checkpoint``."""
    packed = pack_set(ctx.registry, setting.method, refs, **setting.params)
    return {task: ctx.score(pulled(ctx, packed.refs[task])[0], heads[task], task, "test") for task in ctx.tasks}


def merge_rows_for(ctx: Context, spec: str, stored: StoredSet) -> list[Row]:
    """Every merge method over one codec's vectors (exact refs, so packs of the same names never interfere)."""
    heads = {task: head(ctx.registry.delta_tensors(ref)) for task, ref in stored.refs.items()}
    chosen: dict[str, float] = {}
    rows = []
    for setting in ctx.scope.merges:
        since = time.perf_counter()
        coefficient = None
        if setting.kind == "pack":
            acc = pack_merge(ctx, setting, stored.refs, heads)
        elif setting.kind == "per_task":
            coefficient = chosen[setting.lambda_from]
            acc = per_task_merge(ctx.registry, setting, stored, coefficient, ctx.work_dir, ctx.score)
        else:
            acc, coefficient = recipe_merge(ctx, setting, stored.refs, heads, chosen)
        correct = {task: o.correct for task, o in acc.items()}
        acc = {task: o.accuracy for task, o in acc.items()}
        normalized = {task: _fraction(acc[task], ctx.reference[task]["test"].accuracy) for task in ctx.tasks}
        rows.append({
            "method": setting.label, "codec": spec, "lambda": coefficient, "accuracy": acc, "correct": correct,
            "avg_accuracy": _mean(acc.values()), "normalized": normalized, "avg_normalized": known_mean(normalized.values()),
        })
        ctx.log(f"merge {setting.label} from {spec}: avg {rows[-1]['avg_accuracy']:.4f} ({time.perf_counter() - since:.1f}s)")
    return rows


def merge_rows(ctx: Context, stored: dict[str, StoredSet], codecs: list[str]) -> list[Row]:
    """The merge table: every method from fp32 and from each chosen codec, with ratio to the fp32 merge."""
    rows: list[Row] = []
    for spec in codecs:
        since = time.perf_counter()
        rows += merge_rows_for(ctx, spec, stored[spec])
        ctx.mark(f"merges from {spec}", since)
    add_vs_fp32(rows)
    return rows


def add_vs_fp32(rows: list[Row]) -> None:
    """Each merge's average accuracy relative to the same method merged from fp32 vectors."""
    fp32 = {r["method"]: r["avg_accuracy"] for r in rows if r["codec"] == FP32}
    for row in rows:
        if fp32.get(row["method"]):
            row["vs_fp32_merge"] = row["avg_accuracy"] / fp32[row["method"]]


# ---- the run ----------------------------------------------------------------------------------


def run_seed(settings: HarnessSettings, tasks: dict[str, Task], base_name: str, seed: int, work_dir: Path,
             cache_dir: Path) -> dict[str, Any]:
    """One base, one fine-tune seed: every table, each score with its per-example outcomes."""
    ctx = prepare(settings, tasks, base_name, seed, work_dir, cache_dir)
    try:
        since = time.perf_counter()
        ctx.reference, ctx.zero = reference_outcomes(ctx), zero_outcomes(ctx)
        accuracy = {task: round(o["test"].accuracy, 3) for task, o in ctx.reference.items()}
        ctx.log(f"fp32 fine-tunes {accuracy}, tau zeroed {({t: round(o.accuracy, 3) for t, o in ctx.zero.items()})}")
        stored = store_all(ctx)
        since = ctx.mark("push", since)
        individual = individual_rows(ctx, stored)
        since = ctx.mark("individual", since)
        lora = lora_rows(ctx, stored[FP32])
        since = ctx.mark("lora_export", since)
        merges = merge_rows(ctx, stored, merge_codecs(ctx))
        ctx.mark("merges", since)
    finally:
        ctx.registry.close()
    ctx.timings["total"] = round(time.perf_counter() - ctx.started, 1)
    return {
        "base": base_name, "seed": seed,
        "fp32": {t: {split: o.accuracy for split, o in r.items()} for t, r in ctx.reference.items()},
        "fp32_correct": {t: r["test"].correct for t, r in ctx.reference.items()},
        "zero": {t: o.accuracy for t, o in ctx.zero.items()}, "zero_correct": {t: o.correct for t, o in ctx.zero.items()},
        "individual": individual, "lora_export": lora, "merges": merges, "timings_s": dict(ctx.timings),
        "evaluations": {"run": ctx.score.evaluated, "reused_identical_weights": ctx.score.reused},
    }


def run(settings: HarnessSettings, out_dir: Path, work_dir: Path, cache_dir: Path,
        all_bases: tuple[str, ...] | None = None, command: str = "", resume: bool = False) -> dict[str, Any]:
    """Every base x seed of ``settings``; after each finished run, that base's entry of the results is rewritten.

    A run that fails raises before anything of it is written.  Each base's
    entry states its own machine, load, commit and command, so bases can run
    as separate invocations (two processes, or one base rerun) and the results
    file gathers them (:func:`record_base`); ``complete`` says whether every
    base of ``all_bases`` (default: ``settings.bases``) has every seed in.
    With ``resume``, a base keeps the seeds its recorded entry already has
    (:func:`recorded_runs`) and runs only the missing ones: a run of hours that
    was stopped need not start over.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    limit_threads(settings.threads)
    full = replace(settings, bases=all_bases or settings.bases)
    results: dict[str, Any] = {}
    try:
        tasks = load_tasks(list(settings.tasks), settings.finetune.sizes, settings.split_seed)
        for base_name in settings.bases:
            before, started = machine.snapshot(), time.perf_counter()
            runs, earlier = recorded_runs(out_dir, full, base_name) if resume else ([], [])
            for seed in [s for s in settings.seeds if s not in {r["seed"] for r in runs}]:
                runs = sorted([*runs, run_seed(settings, tasks, base_name, seed, work_dir, cache_dir)],
                              key=lambda r: r["seed"])
                entry = {"runs": runs, "summary": summarize(runs, settings), "complete": len(runs) == len(settings.seeds),
                         "seconds": round(time.perf_counter() - started, 1), "torch_threads": torch.get_num_threads(),
                         "machine": machine.finish(before), "command": command, "earlier": earlier}
                results = record_base(out_dir, full, base_name, entry)
    finally:
        torch.set_num_threads(threads)
    return results or json.loads((out_dir / "eval_results.json").read_text())  # resumed with nothing left to run


def recorded_runs(out_dir: Path, settings: HarnessSettings, base_name: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The runs ``base_name``'s recorded entry already holds, and where they came from, for ``--resume``.

    Only an entry measured the same way can be continued: the same shared
    settings and the same scope, else the error says what differs.  The
    provenance of the kept runs (their seeds, command, seconds, machine and
    commit) goes on as the new entry's ``earlier`` list.
    """
    path = out_dir / "eval_results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    entry = results.get("bases", {}).get(base_name)
    if entry is None:
        return [], []
    if shared_settings(results["settings"]) != shared_settings(as_recorded(settings)):
        raise SystemExit(f"cannot resume {base_name}: {path} was measured with other shared settings; run without --resume")
    if entry["scope"] != as_recorded(settings.scope_for(base_name)):
        raise SystemExit(f"cannot resume {base_name}: its recorded scope differs from this run's; run without --resume")
    runs = [r for r in entry["runs"] if r["seed"] in settings.seeds]
    part = {"seeds": [r["seed"] for r in runs], "command": entry["command"], "seconds": entry["seconds"],
            "machine": entry["machine"]}
    return runs, [*entry.get("earlier", []), part] if runs else []


def as_recorded(settings: Any) -> dict[str, Any]:
    """A settings dataclass as the results file holds it (JSON types), so a recorded one compares equal."""
    return json.loads(json.dumps(asdict(settings), default=str))


#: settings that differ by base (each base's entry records its own scope); the rest every base shares
PER_BASE_SETTINGS = ("bases", "scope", "scopes")


def shared_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """What every base in one results file must share: seeds, tasks, splits, fine-tune schedule, target, budgets."""
    return {key: value for key, value in settings.items() if key not in PER_BASE_SETTINGS}


def record_base(out_dir: Path, settings: HarnessSettings, base_name: str, entry: dict[str, Any]) -> dict[str, Any]:
    """Put ``entry`` in as ``base_name``'s results, keeping other bases' entries made with the same shared settings.

    Read-modify-write under a file lock (two bases may finish runs at the same
    moment) and an atomic rename. A file whose shared settings differ (or
    written by an older harness) is started afresh, so one file never compares
    bases measured differently; a base's own scope may change without touching
    the others' entries. Then the tables and the plot are rendered from the whole file.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "eval_results.json"
    wanted = shared_settings(as_recorded(settings))
    entry = {**entry, "scope": as_recorded(settings.scope_for(base_name))}
    with (out_dir / ".eval_results.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = json.loads(path.read_text()) if path.exists() else {}
        if shared_settings(results.get("settings", {})) != wanted or "bases" not in results:
            results = {"settings": wanted, "tasks": list(settings.tasks), "bases": {}}
        results["settings"] = wanted
        bases = {**results["bases"], base_name: entry}
        results["bases"] = {name: bases[name] for name in settings.bases if name in bases}
        results["complete"] = all(name in bases and bases[name]["complete"] for name in settings.bases)
        staging = path.with_suffix(".json.tmp")
        staging.write_text(json.dumps(results, indent=1, default=str))
        os.replace(staging, path)
        write_tables(results, out_dir)
    return results


def write_tables(results: dict[str, Any], out_dir: Path) -> None:
    """eval_accuracy_vs_bytes.png and eval_tables.md from the results (prefixed: other benchmarks share the folder)."""
    summaries = {name: b["summary"] for name, b in results["bases"].items()}
    title = f"Rebuilt fine-tunes ({', '.join(results['tasks'])}): accuracy vs footprint, mean over seeds"
    plot_accuracy_vs_bytes(summaries, out_dir / "eval_accuracy_vs_bytes.png", title)
    (out_dir / "eval_tables.md").write_text(render(results) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny random BERT and MPNet, a few dozen examples (seconds)")
    parser.add_argument("--base", action="append", help="base model to run (repeatable; default: every base)")
    parser.add_argument("--out", type=Path, help="results folder (default benchmarks/results, quick: .cache/quick/results)")
    parser.add_argument("--work", type=Path, help="scratch folder for the registries (default under benchmarks/.cache)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the seeds each base's recorded entry already has; run only the missing ones")
    args = parser.parse_args(argv)
    full = quick_settings() if args.quick else HarnessSettings()
    settings = full
    if args.base:
        unknown = sorted(set(args.base) - set(full.bases))
        if unknown:
            parser.error(f"unknown base {unknown[0]!r}: choose from {', '.join(full.bases)}")
        settings = replace(full, bases=tuple(b for b in full.bases if b in args.base))
    command = "python -m benchmarks.eval.harness " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.quick:
        work = args.work or CACHE_DIR / "quick"
        results = run(settings, args.out or work / "results", work, work, full.bases, command.strip(), args.resume)
    else:
        results = run(settings, args.out or RESULTS_DIR, args.work or CACHE_DIR / "harness", CACHE_DIR, full.bases,
                      command.strip(), args.resume)
    print(render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
