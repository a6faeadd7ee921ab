"""Accuracy of a checkpoint (encoder + head) on a task split: batched, inference mode.

The harness evaluates dozens of rebuilt and merged models on the same splits,
so each split is tokenized once and cut into length-sorted batches (little
padding, same result as any other order), and encoder and head are passed
separately: a merged encoder is scored on every task with each task's own head.
``Scorer`` remembers each score by a digest of the weights, so a rebuilt model
identical to one already scored (the lossless round trip of a fine-tune) is
not evaluated twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from benchmarks.eval.data import Example, Task
from benchmarks.eval.model import classify


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    order: tuple[int, ...]  # each row's index in the split


def make_batches(
    examples: list[Example], tokenizer: PreTrainedTokenizerBase, max_length: int, batch_size: int = 64
) -> list[Batch]:
    """Tokenize once; batches of similar length so padding costs little."""
    encoded = tokenizer([text for text, _ in examples], truncation=True, max_length=max_length)["input_ids"]
    order = sorted(range(len(examples)), key=lambda i: len(encoded[i]))
    batches = []
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        width = max(len(encoded[i]) for i in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        mask = torch.zeros(len(chunk), width, dtype=torch.long)
        for row, i in enumerate(chunk):
            ids[row, : len(encoded[i])] = torch.tensor(encoded[i])
            mask[row, : len(encoded[i])] = 1
        pad = tokenizer.pad_token_id or 0
        ids[mask == 0] = pad
        batches.append(Batch(ids, mask, torch.tensor([examples[i][1] for i in chunk]), tuple(chunk)))
    return batches


class SplitCache:
    """Tokenized batches per (task, split), built on first use; ``test_examples`` keeps the test split's first N."""

    def __init__(self, tasks: dict[str, Task], tokenizer: PreTrainedTokenizerBase, max_length: Callable[[str], int],
                 test_examples: int | None = None) -> None:
        self.tasks, self.tokenizer, self.max_length = tasks, tokenizer, max_length
        self.test_examples = test_examples
        self._batches: dict[tuple[str, str], list[Batch]] = {}

    def get(self, task: str, split: str) -> list[Batch]:
        key = (task, split)
        if key not in self._batches:
            examples = getattr(self.tasks[task], split)
            if split == "test" and self.test_examples is not None:
                examples = examples[: self.test_examples]
            self._batches[key] = make_batches(examples, self.tokenizer, self.max_length(task))
        return self._batches[key]


@dataclass(frozen=True)
class Outcome:
    """Which examples of a split a model got right, in the split's order: ``"1"`` right, ``"0"`` wrong.

    Kept per example (not only the accuracy) so that intervals can be
    bootstrapped over examples and paired with the fp32 fine-tune's outcomes.
    """

    correct: str

    @property
    def accuracy(self) -> float:
        return self.correct.count("1") / max(1, len(self.correct))


@torch.inference_mode()
def outcome(encoder: PreTrainedModel, head: nn.Linear, batches: list[Batch]) -> Outcome:
    """Per-example correctness (argmax logit == label), back in the split's order."""
    encoder.eval(), head.eval()
    right: dict[int, bool] = {}
    for batch in batches:
        hits = (classify(encoder, head, batch.input_ids, batch.attention_mask).argmax(-1) == batch.labels).tolist()
        right.update(zip(batch.order, hits))
    return Outcome("".join("1" if right[i] else "0" for i in range(len(right))))


def fingerprint(*modules: nn.Module) -> str:
    """A digest of every parameter and buffer of ``modules`` (names, dtypes, shapes, bytes)."""
    digest = hashlib.blake2b(digest_size=20)
    for module in modules:
        for name, tensor in module.state_dict().items():
            digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
            digest.update(tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


class Scorer:
    """``outcome`` on a ``SplitCache``, remembered by the weights' digest (identical weights, same score)."""

    def __init__(self, splits: SplitCache) -> None:
        self.splits = splits
        self.evaluated = self.reused = 0
        self._memo: dict[tuple[str, str, str], Outcome] = {}

    def __call__(self, encoder: PreTrainedModel, head: nn.Linear, task: str, split: str) -> Outcome:
        key = (fingerprint(encoder, head), task, split)
        if key in self._memo:
            self.reused += 1
        else:
            self.evaluated += 1
            self._memo[key] = outcome(encoder, head, self.splits.get(task, split))
        return self._memo[key]
