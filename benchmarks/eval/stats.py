"""Accuracy over seeds with bootstrap 95% intervals, paired with the fp32 fine-tunes.

A row's accuracy on a task is the mean over fine-tune seeds of the fraction
of test examples it gets right.  Its interval resamples both sources of
chance at once: the test examples (with replacement, the same draw for every
seed, since the test split is shared) and the seeds (with replacement).  The
same draws are applied to the fp32 fine-tunes and to the zeroed-tau models,
so "retained" (acc / fp32 acc) and "gain kept" ((acc - zero) / (fp32 - zero))
are paired ratios, not ratios of two independent noisy numbers.  numpy with
a fixed RNG seed: the same outcomes always give the same interval.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

REPLICATES = 1000
RNG_SEED = 0
LEVEL = 0.95


def known_mean(values: Iterable[float | None]) -> float | None:
    """The mean of the values that are defined (a fraction of an fp32 score of 0 is not), or ``None``."""
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def known_min(values: Iterable[float | None]) -> float | None:
    """The least defined value, or ``None``."""
    known = [v for v in values if v is not None]
    return min(known) if known else None


@dataclass(frozen=True)
class Draws:
    """Resampled seed and example indices, one row per replicate."""

    seeds: np.ndarray  # (B, S)
    examples: np.ndarray  # (B, n)


def draws(n_seeds: int, n_examples: int, replicates: int = REPLICATES) -> Draws:
    """The bootstrap draws for ``n_seeds`` x ``n_examples`` (fixed RNG seed: reproducible)."""
    rng = np.random.default_rng(RNG_SEED)
    return Draws(rng.integers(0, n_seeds, (replicates, n_seeds)), rng.integers(0, n_examples, (replicates, n_examples)))


def as_matrix(outcomes: Sequence[str]) -> np.ndarray:
    """Per-seed outcome strings (``"1"`` right) as a (seeds, examples) 0/1 array."""
    lengths = {len(o) for o in outcomes}
    if len(lengths) != 1:
        raise ValueError(f"outcomes of different lengths {sorted(lengths)}: not the same test split")
    return np.array([[c == "1" for c in o] for o in outcomes], dtype=np.float64)


def replicate_accuracy(outcomes: Sequence[str], d: Draws) -> np.ndarray:
    """Mean accuracy over the drawn seeds of the drawn examples, per replicate: shape (B,)."""
    per_seed = as_matrix(outcomes)[:, d.examples].mean(axis=2)  # (S, B)
    return np.take_along_axis(per_seed.T, d.seeds, axis=1).mean(axis=1)


@dataclass(frozen=True)
class Interval:
    """A point estimate and its bootstrap interval (``None`` where undefined, e.g. no gain to keep)."""

    value: float | None
    low: float | None
    high: float | None

    @classmethod
    def of(cls, value: float | None, replicates: np.ndarray) -> Interval:
        finite = replicates[np.isfinite(replicates)]
        if value is None or not np.isfinite(value) or finite.size == 0:
            return cls(None, None, None)
        tail = (1 - LEVEL) / 2 * 100
        low, high = np.percentile(finite, [tail, 100 - tail])
        return cls(float(value), float(low), float(high))

    def as_dict(self) -> dict[str, float | None]:
        return {"value": self.value, "low": self.low, "high": self.high}


def _ratio(num: np.ndarray | float, den: np.ndarray | float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.asarray(den) != 0, np.asarray(num) / np.asarray(den), np.nan)


@dataclass(frozen=True)
class TaskMeasure:
    """One row on one task: replicates of accuracy, retained and gain kept, and their point estimates."""

    accuracy: np.ndarray
    retained: np.ndarray
    gain: np.ndarray
    point: tuple[float, float, float]


def measure(row: Sequence[str], fp32: Sequence[str], zero: Sequence[str]) -> TaskMeasure:
    """Accuracy, retained (acc / fp32) and gain kept ((acc - zero) / (fp32 - zero)), paired draws."""
    d = draws(len(row), len(row[0]))
    acc, ref, base = (replicate_accuracy(x, d) for x in (row, fp32, zero))
    a, r, z = (float(as_matrix(x).mean()) for x in (row, fp32, zero))
    point = (a, float(_ratio(a, r)), float(_ratio(a - z, r - z)))
    return TaskMeasure(acc, _ratio(acc, ref), _ratio(acc - base, ref - base), point)


def intervals(m: TaskMeasure) -> dict[str, dict[str, float | None]]:
    """``accuracy`` / ``retained`` / ``gain_kept`` as value-low-high dicts."""
    names = ("accuracy", "retained", "gain_kept")
    reps = (m.accuracy, m.retained, m.gain)
    return {n: Interval.of(p, r).as_dict() for n, p, r in zip(names, m.point, reps, strict=True)}


def paired_ratio(rows: Sequence[Sequence[str]], refs: Sequence[Sequence[str]]) -> Interval:
    """Average accuracy over tasks of ``rows`` relative to ``refs``' (per task, per-seed outcome strings).

    Both sides take the same draws, task by task (the same test examples and
    the same seeds, in seed order), so the interval measures their difference,
    not the noise each has alone: identical outcomes give exactly ``[1, 1]``.
    This is how a merge from compressed storage is read against the same
    merge from fp32.
    """
    num, den, point_num, point_den = [], [], [], []
    for row, ref in zip(rows, refs, strict=True):
        both = as_matrix([*row, *ref])  # refuses outcomes of another test split
        if len(row) != len(ref):
            raise ValueError(f"{len(row)} seed(s) against {len(ref)}: not the same fine-tunes")
        d = draws(len(row), len(row[0]))
        num.append(replicate_accuracy(row, d))
        den.append(replicate_accuracy(ref, d))
        point_num.append(both[: len(row)].mean())
        point_den.append(both[len(row):].mean())
    point = float(_ratio(np.mean(point_num), np.mean(point_den)))
    return Interval.of(point, _ratio(np.mean(num, axis=0), np.mean(den, axis=0)))


def average(measures: Sequence[TaskMeasure]) -> TaskMeasure:
    """The mean over tasks (replicate by replicate, so the interval is the average's own)."""
    stack = lambda f: np.mean([f(m) for m in measures], axis=0)  # noqa: E731
    point = tuple(float(np.mean([m.point[i] for m in measures])) for i in range(3))
    return TaskMeasure(stack(lambda m: m.accuracy), stack(lambda m: m.retained), stack(lambda m: m.gain), point)
