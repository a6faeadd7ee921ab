"""The serving-world rows: each fine-tune as a LoRA export per rank, and a merge pulled per task with its own head.

LoRA rows go the way a serving user goes: ``Registry.to_lora`` writes a PEFT
adapter from the lossless vector, ``peft`` loads it onto the base encoder and
``merge_and_unload`` folds it in; the head comes back from the adapter's
``modules_to_save`` tensors. Footprint is the adapter file per parameter.

The per-task row is task arithmetic saved as a recipe with
``extra_tensors: drop`` and pulled with ``Registry.pull_per_task`` (``tvstore
pull --checkpoint --per-task``): every task is scored from its own folder,
the merged encoder with that task's head. It must score what the in-memory
task-arithmetic row scores, with the coefficient that row picked.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from benchmarks.eval.merging import merge_recipe
from benchmarks.eval.model import HEAD_NAMES, load_encoder, load_head
from benchmarks.eval.report import Row
from benchmarks.eval.settings import MergeSetting
from benchmarks.eval.stats import known_mean, known_min
from benchmarks.eval.store import StoredSet, slug
from tvstore.checkpoint.peft import PREFIX, WEIGHTS_NAME
from tvstore.registry import Registry
from tvstore.util.refs import parse_ref

Score = Callable[[Any, Any, str, str], Any]  # evaluate.Scorer: returns an Outcome


def adapter_model(base_dir: Path, adapter: Path) -> tuple[Any, Any]:
    """Encoder with the adapter merged in by peft, and the head from the adapter's modules_to_save."""
    import peft
    import torch
    from safetensors.torch import load_file

    merged = peft.PeftModel.from_pretrained(load_encoder(base_dir), adapter).merge_and_unload().eval()
    tensors = load_file(adapter / WEIGHTS_NAME)
    weight, bias = (tensors[PREFIX + n].float() for n in HEAD_NAMES)
    head = torch.nn.Linear(weight.shape[1], weight.shape[0])
    head.load_state_dict({"weight": weight, "bias": bias})
    return merged, head.eval()


def lora_row(registry: Registry, stored: StoredSet, rank: int, base_dir: Path, work_dir: Path, score: Score,
             reference: Mapping[str, float], raw_bytes_per_param: float) -> Row:
    """Every task's lossless vector exported at ``rank`` and scored through peft."""
    acc, correct, bpp, errors = {}, {}, [], []
    for task, ref in stored.refs.items():
        out = work_dir / "lora"
        shutil.rmtree(out, ignore_errors=True)
        export = registry.to_lora(ref, out, rank=rank)
        outcome = score(*adapter_model(base_dir, out), task, "test")
        acc[task], correct[task] = outcome.accuracy, outcome.correct
        bpp.append((out / WEIGHTS_NAME).stat().st_size / stored.num_params[task])
        errors.append(export.rel_l2)
        shutil.rmtree(out, ignore_errors=True)
    retained = {t: acc[t] / reference[t] if reference[t] else None for t in acc}
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    return {
        "rank": rank, "path": "lora", "accuracy": acc, "correct": correct, "retained": retained, "avg_accuracy": mean(list(acc.values())),
        "avg_retained": known_mean(retained.values()), "min_retained": known_min(retained.values()),
        "bytes_per_param": mean(bpp), "ratio_vs_fp32": raw_bytes_per_param / mean(bpp), "rel_l2": mean(errors),
    }


def per_task_merge(registry: Registry, setting: MergeSetting, stored: StoredSet, coefficient: float,
                   work_dir: Path, score: Score) -> dict[str, Any]:
    """Task arithmetic saved with its heads dropped, pulled once per task with that task's own head (outcomes)."""
    recipe = {**merge_recipe(setting, stored.refs, coefficient), "extra_tensors": "drop"}
    info = registry.save_merge(f"{setting.label}.{slug(stored.codec)}", recipe)
    out = work_dir / "per_task"
    shutil.rmtree(out, ignore_errors=True)
    folders = {folder.name: folder for folder in registry.pull_per_task(info.ref, out)}
    try:
        own = {task: folders[parse_ref(ref).name] for task, ref in stored.refs.items()}  # folders are input names
        return {task: score(load_encoder(folder), load_head(folder), task, "test") for task, folder in own.items()}
    finally:
        shutil.rmtree(out, ignore_errors=True)
