"""Bootstrap intervals of the evaluation: over seeds and examples, paired with the fp32 fine-tunes, reproducible."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` lives at the repository root

from benchmarks.eval.stats import (  # noqa: E402
    Interval, average, draws, intervals, known_mean, known_min, measure, paired_ratio, replicate_accuracy,
)


def test_draws_are_fixed_by_the_rng_seed() -> None:
    a, b = draws(3, 50), draws(3, 50)
    assert a.seeds.shape == (1000, 3) and a.examples.shape == (1000, 50)
    assert np.array_equal(a.seeds, b.seeds) and np.array_equal(a.examples, b.examples)


def test_replicates_resample_seeds_and_examples() -> None:
    d = draws(2, 4)
    reps = replicate_accuracy(["1111", "0000"], d)  # one seed always right, one always wrong
    expected = (d.seeds == 0).mean(axis=1)  # so each replicate's mean is the share of seed-0 draws
    assert np.allclose(reps, expected)


def test_identical_outcomes_keep_exactly_everything() -> None:
    row = ["1101100111", "1111000011", "0101010101"]
    m = intervals(measure(row, row, ["0000000000"] * 3))
    assert m["retained"] == {"value": 1.0, "low": 1.0, "high": 1.0}
    assert m["gain_kept"] == {"value": 1.0, "low": 1.0, "high": 1.0}
    assert m["accuracy"]["value"] == pytest.approx(18 / 30)
    assert m["accuracy"]["low"] < 18 / 30 < m["accuracy"]["high"]


def test_point_estimates_are_means_over_seeds_and_gain_is_relative_to_tau_zeroed() -> None:
    fp32, zero = ["1111111100", "1111111100"], ["1111000000", "1111000000"]  # 0.8 and 0.4
    row = ["1111110000", "1111111000"]  # 0.6 and 0.7
    m = measure(row, fp32, zero)
    assert m.point == pytest.approx((0.65, 0.65 / 0.8, (0.65 - 0.4) / (0.8 - 0.4)))


def test_no_gain_to_keep_is_undefined_not_a_number() -> None:
    same = ["1100", "1010"]
    m = intervals(measure(same, same, same))
    assert m["gain_kept"] == {"value": None, "low": None, "high": None}
    assert Interval.of(None, np.array([0.5])) == Interval(None, None, None)


def test_average_over_tasks_is_replicate_by_replicate() -> None:
    a = measure(["1100"], ["1100"], ["0000"])
    b = measure(["1111"], ["1111"], ["0000"])
    avg = average([a, b])
    assert avg.point == pytest.approx((0.75, 1.0, 1.0))
    assert np.allclose(avg.accuracy, (a.accuracy + b.accuracy) / 2)


def test_outcomes_of_different_splits_are_refused() -> None:
    with pytest.raises(ValueError, match=r"^outcomes of different lengths \[3, 4\]: not the same test split$"):
        measure(["1111", "111"], ["1111", "1111"], ["0000", "0000"])


def test_known_mean_and_min_skip_undefined_fractions() -> None:
    assert known_mean([0.5, None, 1.0]) == 0.75 and known_min([None, 0.9, 0.7]) == 0.7
    assert known_mean([None]) is None and known_min([]) is None


def test_paired_ratio_of_identical_outcomes_is_exactly_one() -> None:
    # independent draws would spread this; the pairing takes the same examples and seeds on both sides
    task = ["1101100111", "1111000011", "0101010101"]
    assert paired_ratio([task, task[::-1]], [task, task[::-1]]) == Interval(1.0, 1.0, 1.0)


def test_paired_ratio_is_of_the_average_accuracy_over_tasks() -> None:
    ref = [["1111", "1111"], ["1100", "1100"]]  # 1.0 and 0.5: average 0.75
    row = [["1110", "1101"], ["1100", "1000"]]  # 0.75 and 0.375: average 0.5625
    r = paired_ratio(row, ref)
    assert r.value == pytest.approx(0.5625 / 0.75)
    assert r.low < r.value < r.high <= 1.0  # never above the reference: no example is won back


def test_paired_ratio_refuses_other_splits_and_seeds() -> None:
    with pytest.raises(ValueError, match=r"^outcomes of different lengths \[3, 4\]: not the same test split$"):
        paired_ratio([["111"]], [["1111"]])
    with pytest.raises(ValueError, match=r"^2 seed\(s\) against 1: not the same fine-tunes$"):
        paired_ratio([["11", "10"]], [["11"]])
    with pytest.raises(ValueError):
        paired_ratio([["11"], ["10"]], [["11"]])  # another number of tasks
