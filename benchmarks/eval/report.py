"""Tables of what the harness measured: plain-text for the terminal, dicts for JSON, and the README block.

Rows are plain dicts so that the JSON file, the printed table and the test
all read the same structure.  A cell with no value (a merge without a
coefficient) prints as ``n/a``; a codec or method that fails stops the run.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.machine import describe

NA = "n/a"

Row = dict[str, Any]


def _cell(value: Any, digits: int = 4) -> str:
    if value is None:
        return NA
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A fixed-width text table (Markdown pipes, so it pastes into the README)."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = lambda values: "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"  # noqa: E731
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), rule, *(line(r) for r in cells)])


def interval(cell: dict[str, float | None], percent: bool = False) -> str:
    """``0.944 [0.925, 0.961]``, or ``99.3% [98.1, 100.4]`` for fractions of fp32."""
    if cell.get("value") is None:
        return NA
    if percent:
        return f"{cell['value']:.1%} [{cell['low']:.1%}, {cell['high']:.1%}]"
    return f"{cell['value']:.3f} [{cell['low']:.3f}, {cell['high']:.3f}]"


def _kept(cell: dict[str, Any]) -> list[str]:
    return [interval(cell["accuracy"]), interval(cell["retained"], True), interval(cell["gain_kept"], True)]


def fp32_summary_table(summary: Row, tasks: Sequence[str]) -> str:
    """Per task: fp32 test accuracy (mean and each seed) and the tau-zeroed model's (gain kept's 0%)."""
    rows = [[t, summary["fp32"][t]["fp32"], " / ".join(f"{a:.3f}" for a in summary["fp32"][t]["fp32_seeds"]),
             summary["fp32"][t]["zero"]] for t in tasks]
    return format_table(["task", "fp32 (mean)", "fp32 per seed", "tau zeroed"], rows)


def target_table(summary: Row, tasks: Sequence[str]) -> str:
    """Per task (and all at once): the smallest setting whose means keep the target, with its intervals."""
    rows = []
    for key in [*tasks, "all"]:
        row = summary["target"]["smallest"][key]
        if row is None:
            rows.append([key, "none meets it", NA, NA, NA, NA])
            continue
        cell = row["average"] if key == "all" else row["tasks"][key]
        rows.append([key if key != "all" else "all tasks (average)", row["codec"], f"{row['bits_per_param']:.3f}", *_kept(cell)])
    return format_table(["task", "smallest setting", "bits/param", "accuracy", "retained", "gain kept"], rows)


def budget_table(summary: Row) -> str:
    """Per bit budget, each family's most accurate setting within it (averages over tasks, intervals)."""
    rows = [[budget, r["codec"], f"{r['bits_per_param']:.3f}", *_kept(r["average"]),
             f"{min(c['retained']['value'] for c in r['tasks'].values()):.1%}"]
            for budget, found in summary["budgets"].items() for r in found]
    return format_table(["budget (bit/param)", "codec", "bits/param", "avg accuracy", "avg retained", "avg gain kept",
                         "worst task retained"], rows)


def settings_table(summary: Row, tasks: Sequence[str]) -> str:
    """Every setting: per-task accuracy and the averages, all with intervals."""
    rows = [[r["codec"], r["path"], f"{r['bits_per_param']:.3f}", *(interval(r["tasks"][t]["accuracy"]) for t in tasks),
             interval(r["average"]["retained"], True), interval(r["average"]["gain_kept"], True), r["rel_l2"]]
            for r in summary["individual"]]
    return format_table(["codec", "path", "bits/param", *tasks, "avg retained", "avg gain kept", "rel L2"], rows)


def merge_summary_table(summary: Row) -> str:
    """Every merge method x source codec: normalized accuracy (merged / fp32 fine-tune) and accuracy relative to
    the same merge from fp32, with intervals."""
    rows = [[r["method"], r["codec"], "/".join(f"{x:g}" for x in r["lambdas"]) or NA, interval(r["average"]["accuracy"]),
             interval(r["average"]["retained"], True), interval(r.get("vs_fp32_merge", {}), True)]
            for r in summary["merges"]]
    return format_table(["method", "from codec", "lambda", "avg accuracy", "normalized", "vs fp32 merge"], rows)


def lora_summary_table(summary: Row) -> str:
    rows = [[r["rank"], r["avg_accuracy"], r["avg_retained"], r["min_retained"], 8 * r["bytes_per_param"], r["rel_l2"]]
            for r in summary["lora_export"]]
    return format_table(["rank", "avg accuracy", "avg retained", "worst retained", "bits/param", "rel L2"], rows)


def target_heading(summary: Row) -> str:
    t = summary["target"]
    return f"smallest setting keeping >= {t['retained']:.0%} of fp32 accuracy and >= {t['gain_kept']:.0%} of the gain"


def base_sections(name: str, summary: Row, tasks: Sequence[str]) -> list[str]:
    """The headline tables of one base (what the README shows)."""
    seeds = ", ".join(str(s) for s in summary["seeds"])
    return [
        f"### {name}: fp32 fine-tunes (test accuracy; seeds {seeds})", fp32_summary_table(summary, tasks),
        f"### {name}: {target_heading(summary)} (means over seeds, bootstrap 95% intervals)", target_table(summary, tasks),
        f"### {name}: codecs at {' / '.join(summary['budgets'])} bit per parameter", budget_table(summary),
    ]


def merge_sections(name: str, summary: Row) -> list[str]:
    """The merge table of a base whose scope merges; nothing for one that does not."""
    if not summary["merges"]:
        return []
    return [f"### {name}: merges (normalized = merged / fp32 fine-tune; vs fp32 merge = merged from that codec / the "
            "same merge from lossless vectors, on the same draws: an interval above 100% would show a gain, one "
            "below it a loss)", merge_summary_table(summary)]


def provenance(name: str, base: Row) -> str:
    """Where a base's numbers come from: command, seeds done, time, machine, load, commit (of each resumed part too)."""
    state = "complete" if base["complete"] else f"partial ({len(base['runs'])} of its seeds so far)"
    text = (f"{name}: `{base['command']}`, {state}, {base['seconds']:.0f} s with {base['torch_threads']} torch "
            f"threads. {describe(base['machine'])}")
    for part in base.get("earlier", []):
        seeds = ", ".join(str(s) for s in part["seeds"])
        text += (f" Seed(s) {seeds} come from an earlier run (resumed): `{part['command']}`, {part['seconds']:.0f} s."
                 f" {describe(part['machine'])}")
    return text


def render(results: Row) -> str:
    """Every table of every base as text (printed, and saved as eval_tables.md)."""
    tasks = results["tasks"]
    parts = [f"complete: {results['complete']} (bases so far: {', '.join(results['bases'])})"]
    for name, base in results["bases"].items():
        summary = base["summary"]
        parts += [provenance(name, base), *base_sections(name, summary, tasks)]
        parts += [f"### {name}: every setting", settings_table(summary, tasks), *merge_sections(name, summary)]
        if summary["lora_export"]:
            parts += [f"### {name}: LoRA export (Registry.to_lora, merged back by peft)", lora_summary_table(summary)]
    return "\n\n".join(parts)


README_BEGIN, README_END = "<!-- eval:begin -->", "<!-- eval:end -->"


def readme_block(results: Row | None, source: str) -> str:
    """The README's evaluation figures, from ``source`` (a results file ``make eval`` wrote), or why there are none."""
    lines = [README_BEGIN, f"<!-- generated by `python -m benchmarks.eval.report --readme` from {source}: edit that, not this -->", ""]
    if results is None:
        lines.append(f"No results of this harness yet: `make eval` writes {source}.")
    elif "bases" not in results:
        lines.append(f"No results of this harness yet: {source} is from the single-seed harness before issue 11 "
                     "(one base, the drug-review task, no intervals); `make eval` replaces it.")
    else:
        if not results["complete"]:
            lines.append(f"Partial results (bases so far: {', '.join(results['bases'])}).")
        for name, base in results["bases"].items():
            sections = [provenance(name, base), *base_sections(name, base["summary"], results["tasks"]),
                        *merge_sections(name, base["summary"])]
            lines += ["", *(part + "\n" for part in sections)]
        plot = source.replace("eval_results.json", "eval_accuracy_vs_bytes.png")
        lines += [f"All tables: `{source.replace('eval_results.json', 'eval_tables.md')}`.", "",
                  f"![accuracy vs stored bits per parameter]({plot})"]
    return "\n".join([*lines, "", README_END])


def update_readme(readme: Path, results_path: Path) -> bool:
    """Rewrite the block between the eval markers of ``readme`` from ``results_path``; True if it changed."""
    text = readme.read_text()
    if README_BEGIN not in text or README_END not in text:
        raise ValueError(f"{readme} has no {README_BEGIN} ... {README_END} block")
    results = json.loads(results_path.read_text()) if results_path.exists() else None
    head, _, rest = text.partition(README_BEGIN)
    _, _, tail = rest.partition(README_END)
    new = head + readme_block(results, f"benchmarks/results/{results_path.name}") + tail
    readme.write_text(new)
    return new != text


def main(argv: list[str] | None = None) -> int:
    """``--readme``: copy the evaluation tables from ``benchmarks/results/eval_results.json`` into README.md."""
    root = Path(__file__).resolve().parents[2]
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--readme", action="store_true", required=True)
    parser.add_argument("--results", type=Path, default=root / "benchmarks" / "results" / "eval_results.json")
    args = parser.parse_args(argv)
    changed = update_readme(root / "README.md", args.results)
    print("README.md updated" if changed else "README.md already up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
