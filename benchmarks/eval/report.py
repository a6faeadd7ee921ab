"""Tables of what the harness measured: plain-text for the terminal, dicts for JSON.

Rows are plain dicts so that the JSON file, the printed table and the test
all read the same structure.  A cell with no value (a merge without a
coefficient) prints as ``n/a``; a codec or method that fails stops the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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


def individual_table(rows: list[Row], tasks: Sequence[str]) -> str:
    """Task x codec: rebuilt accuracy vs fp32, bytes/param, ratio vs fp32, rel L2."""
    headers = ["codec", "path", *tasks, "avg", "retained", "bytes/param", "x vs fp32", "rel L2"]
    table = []
    for row in rows:
        acc = row.get("accuracy") or {}
        table.append(
            [row["codec"], row.get("path") or NA, *(acc.get(t) for t in tasks), row.get("avg_accuracy"),
             row.get("avg_retained"), row.get("bytes_per_param"), row.get("ratio_vs_fp32"), row.get("rel_l2")]
        )
    return format_table(headers, table)


def lora_table(rows: list[Row], tasks: Sequence[str]) -> str:
    """Rank x task: accuracy of the fine-tune exported as a LoRA adapter and merged back by peft."""
    headers = ["rank", *tasks, "avg", "retained", "bytes/param", "x vs fp32", "rel L2"]
    table = [[row["rank"], *(row["accuracy"].get(t) for t in tasks), row["avg_accuracy"], row["avg_retained"],
              row["bytes_per_param"], row["ratio_vs_fp32"], row["rel_l2"]] for row in rows]
    return format_table(headers, table)


def fp32_table(reference: dict[str, dict[str, float]], tasks: Sequence[str]) -> str:
    """The fp32 fine-tunes themselves (the 100% every other number is measured against)."""
    rows = [[split, *(reference[t][split] for t in tasks)] for split in ("test", "val")]
    return format_table(["split", *tasks], rows)


def merge_table(rows: list[Row], tasks: Sequence[str]) -> str:
    """Method x source codec: absolute and normalized accuracy, and vs the same merge from fp32."""
    headers = ["method", "from codec", "lambda", *tasks, "avg", *(f"norm {t}" for t in tasks), "norm avg", "vs fp32 merge"]
    table = []
    for row in rows:
        acc, norm = row.get("accuracy") or {}, row.get("normalized") or {}
        table.append(
            [row["method"], row["codec"], row.get("lambda"), *(acc.get(t) for t in tasks), row.get("avg_accuracy"),
             *(norm.get(t) for t in tasks), row.get("avg_normalized"), row.get("vs_fp32_merge")]
        )
    return format_table(headers, table)

