"""One base's runs (one per fine-tune seed) folded into the tables issue 11 asks for.

- ``individual``: per codec setting, accuracy / retained / gain kept per task and
  on average, each the mean over seeds with a bootstrap 95% interval
  (``stats``), and the footprint in bits per parameter (mean over tasks and seeds);
- ``target``: per task, the smallest setting whose mean keeps at least
  ``target.retained`` of fp32 accuracy and ``target.gain_kept`` of the gain
  (``None`` where no setting does), and the same for all tasks at once;
- ``budgets``: per bit budget, each codec family's most accurate setting that
  fits it;
- ``merges``: per method and source codec, normalized accuracy (merged / fp32
  fine-tune) with its interval, and the ratio to the same merge from fp32
  with a paired interval (``stats.paired_ratio``);
- ``lora_export``: per rank, the mean over seeds.

Only settings every seed measured are folded (a merge source chosen by
footprint could in principle differ between seeds).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from benchmarks.eval.report import Row
from benchmarks.eval.stats import TaskMeasure, average, intervals, known_mean, measure, paired_ratio
from tvstore.codecs.spec import split_codec_spec

FP32 = "lossless"


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _common(runs: Sequence[dict[str, Any]], table: str, key: Any) -> list[list[Row]]:
    """Rows of ``table`` grouped across runs by ``key(row)``, in the first run's order, present in every run."""
    by_run = [{key(row): row for row in run[table]} for run in runs]
    return [[rows[k] for rows in by_run] for k in by_run[0] if all(k in rows for rows in by_run)]


def _measures(rows: Sequence[Row], runs: Sequence[dict[str, Any]], tasks: Sequence[str]) -> dict[str, TaskMeasure]:
    """Each task's paired measure of one setting across seeds."""
    return {
        t: measure([r["correct"][t] for r in rows], [run["fp32_correct"][t] for run in runs],
                   [run["zero_correct"][t] for run in runs])
        for t in tasks
    }


def _stats(measures: dict[str, TaskMeasure]) -> dict[str, Any]:
    return {"tasks": {t: intervals(m) for t, m in measures.items()}, "average": intervals(average(list(measures.values())))}


def individual(runs: Sequence[dict[str, Any]], tasks: Sequence[str]) -> list[Row]:
    """Every codec setting, folded over seeds, with intervals."""
    out = []
    for rows in _common(runs, "individual", lambda r: r["codec"]):
        out.append({
            "codec": rows[0]["codec"], "path": rows[0]["path"], "bits_per_param": _mean([8 * r["bytes_per_param"] for r in rows]),
            "rel_l2": _mean([r["rel_l2"] for r in rows]), "seeds": len(rows), **_stats(_measures(rows, runs, tasks)),
        })
    return out


def _keeps(row: Row, task: str | None, target: Any) -> bool:
    """Whether ``row``'s means keep the target on ``task`` (``None``: on every task)."""
    if task is None:
        return all(_keeps(row, t, target) for t in row["tasks"])
    cell = row["tasks"][task]
    retained, gain = cell["retained"]["value"], cell["gain_kept"]["value"]
    return retained is not None and gain is not None and retained >= target.retained and gain >= target.gain_kept


def smallest_meeting(rows: Sequence[Row], tasks: Sequence[str], target: Any) -> dict[str, Row | None]:
    """Per task (and ``"all"``), the smallest-footprint setting whose means keep the target, or ``None``."""
    by_size = sorted(rows, key=lambda r: r["bits_per_param"])
    pick = lambda task: next((r for r in by_size if _keeps(r, task, target)), None)  # noqa: E731
    return {**{t: pick(t) for t in tasks}, "all": pick(None)}


def family(codec: str) -> str:
    return codec.partition(":")[0]


def asked_budget(row: Row) -> float | None:
    """The bits/param/task a packed budget setting (``rtvq:bits=1.0``, ``mixed:bits=0.5``) was asked for."""
    _, params = split_codec_spec(row["codec"])
    return float(params["bits"]) if row["path"] == "pack" and "bits" in params else None


def fits(row: Row, budget: float) -> bool:
    """Measured footprint within ``budget``, or a budget setting asked for exactly it.

    The allocators land within a few percent of the budget they are given,
    sometimes above (headers, a task's share of the shared parts); their row
    stays in that budget's table with its measured bits/param beside it.
    """
    return row["bits_per_param"] <= budget or asked_budget(row) == budget


def at_budgets(rows: Sequence[Row], budgets: Sequence[float]) -> dict[str, list[Row]]:
    """Per budget, each family's most accurate setting (average over tasks) that fits it."""
    out: dict[str, list[Row]] = {}
    for budget in budgets:
        best: dict[str, Row] = {}
        for row in (r for r in rows if fits(r, budget)):
            f = family(row["codec"])
            if f not in best or row["average"]["accuracy"]["value"] > best[f]["average"]["accuracy"]["value"]:
                best[f] = row
        out[f"{budget:g}"] = sorted(best.values(), key=lambda r: -r["average"]["accuracy"]["value"])
    return out


def merges(runs: Sequence[dict[str, Any]], tasks: Sequence[str]) -> list[Row]:
    """Every merge method x source codec, folded over seeds: normalized accuracy with intervals, and
    ``vs_fp32_merge``, its average accuracy over the same method's from fp32 (paired draws, an interval)."""
    out, outcomes = [], {}
    for rows in _common(runs, "merges", lambda r: (r["method"], r["codec"])):
        stats = _stats(_measures(rows, runs, tasks))
        lambdas = sorted({r["lambda"] for r in rows if r["lambda"] is not None})
        out.append({"method": rows[0]["method"], "codec": rows[0]["codec"], "lambdas": lambdas, **stats})
        outcomes[rows[0]["method"], rows[0]["codec"]] = [[r["correct"][t] for r in rows] for t in tasks]
    for row in out:
        fp32 = outcomes.get((row["method"], FP32))
        if fp32 is not None:
            row["vs_fp32_merge"] = paired_ratio(outcomes[row["method"], row["codec"]], fp32).as_dict()
    return out


def lora(runs: Sequence[dict[str, Any]]) -> list[Row]:
    """LoRA export rows, mean over seeds (no interval: a serving-side comparison, not a codec claim)."""
    keys = ("avg_accuracy", "avg_retained", "min_retained", "bytes_per_param", "rel_l2")
    return [{"rank": rows[0]["rank"], **{k: known_mean(r[k] for r in rows) for k in keys}}
            for rows in _common(runs, "lora_export", lambda r: r["rank"])]


def fp32(runs: Sequence[dict[str, Any]], tasks: Sequence[str]) -> dict[str, Any]:
    """The fine-tunes themselves and the tau-zeroed models, mean over seeds, per task."""
    return {t: {"fp32": _mean([r["fp32"][t]["test"] for r in runs]), "zero": _mean([r["zero"][t] for r in runs]),
                "fp32_seeds": [r["fp32"][t]["test"] for r in runs]} for t in tasks}


def summarize(runs: Sequence[dict[str, Any]], settings: Any) -> dict[str, Any]:
    """Everything the report prints for one base."""
    tasks = list(settings.tasks)
    rows = individual(runs, tasks)
    return {
        "seeds": [r["seed"] for r in runs], "fp32": fp32(runs, tasks), "individual": rows,
        "target": {"retained": settings.target.retained, "gain_kept": settings.target.gain_kept,
                   "smallest": smallest_meeting(rows, tasks, settings.target)},
        "budgets": at_budgets(rows, settings.budgets), "merges": merges(runs, tasks), "lora_export": lora(runs),
        "seconds": sum(r["timings_s"]["total"] for r in runs),
    }
