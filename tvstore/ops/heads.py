"""Per-task checkpoints of a merge: the merged model once per task, each with that task's own head.

The most common task-arithmetic setting for classifiers: the encoders merge,
the heads (tensors the base lacks, often a different shape per task) cannot.
A merge saved as its recipe is rebuilt once per input with
``extra_tensors: {from: that input}`` into ``OUT/<input name>/``; the folder
appears whole or not at all.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tvstore.checkpoint.writer import staged_dir
from tvstore.db.models import TaskVector
from tvstore.errors import UsageError
from tvstore.merge import load_recipe
from tvstore.util.refs import Ref


def task_inputs(vector: TaskVector) -> list[tuple[str, Ref]]:
    """``(folder name, input reference)`` for each input of a merge saved as its recipe."""
    if not vector.is_recipe:
        raise UsageError(f"--per-task and --head-from apply to a merge saved as its recipe; {vector.label} is stored as deltas")
    refs = load_recipe(vector.recipe).vectors
    names = [r.name for r in refs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UsageError(f"--per-task writes one folder per input name, and {twice[0]!r} is an input more than once")
    return list(zip(names, refs))


def pull_per_task(vector: TaskVector, out: Path, pull_one: Callable[[Ref, Path], Path]) -> list[Path]:
    """``pull_one(input, folder)`` for every input, into ``out`` as a whole."""
    tasks = task_inputs(vector)
    with staged_dir(out) as staging:
        for name, ref in tasks:
            pull_one(ref, staging / name)
    return [out / name for name, _ in tasks]
