"""Rendering for the CLI: tables and trees for people, JSON for scripts, progress on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.tree import Tree

from tvstore.ops.lineage import LineageNode

out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(size) < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def fmt_float(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}g}"


def fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def table(title: str | None, columns: list[str], rows: list[list[str]]) -> None:
    t = Table(title=title, show_lines=False, header_style="bold")
    for i, col in enumerate(columns):
        t.add_column(col, justify="left" if i == 0 else "right" if col in _NUMERIC else "left", overflow="fold")
    for row in rows:
        t.add_row(*row)
    out.print(t)


_NUMERIC = {"version", "raw", "stored", "ratio", "rel L2", "cosine", "params", "tensors", "components"}


def lineage_tree(root: str, ancestors: list[LineageNode], descendants: list[LineageNode]) -> None:
    tree = Tree(f"[bold]{root}[/bold]")
    if ancestors:
        _add(tree.add("[dim]ancestors[/dim]"), ancestors)
    if descendants:
        _add(tree.add("[dim]descendants[/dim]"), descendants)
    out.print(tree)


def _add(parent: Tree, nodes: list[LineageNode]) -> None:
    for node in nodes:
        weight = f" x{node.weight:g}" if node.weight is not None else ""
        branch = parent.add(f"{node.label} [dim]({node.relation}{weight})[/dim]")
        _add(branch, node.children)


@contextmanager
def rich_progress(description: str, total: int | None) -> Iterator[Any]:
    """The ``tvstore.util.progress.Progress`` the CLI hands to the library."""
    if not err.is_terminal:
        yield lambda n: None
        return
    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)
