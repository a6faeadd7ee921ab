"""The evaluation's splits: de-duplicated, so no text is both trained on and tested on."""

from __future__ import annotations

from benchmarks.eval.data import Sizes, dedupe, split


def test_dedupe_folds_case_and_space_and_drops_conflicting_labels() -> None:
    examples = [("Good film", 1), ("good  film", 1), ("Bad film", 0), ("odd one", 0), ("Odd one", 1), ("fine", 1)]
    assert sorted(dedupe(examples)) == [("Bad film", 0), ("Good film", 1), ("fine", 1)]


def test_splits_share_no_text_and_ignore_file_order() -> None:
    examples = [(f"text {i % 40}", i % 40 % 3) for i in range(120)] + [(f"TEXT {i}", i % 3) for i in range(40, 80)]
    train, val, test = split(examples, Sizes(train=100, val=10, test=10), seed=3)
    texts = [" ".join(t.lower().split()) for t, _ in train + val + test]
    assert len(texts) == len(set(texts)) == 80  # 40 repeated 3x with one label each, 40 unique
    assert (train, val, test) == split(list(reversed(examples)), Sizes(train=100, val=10, test=10), seed=3)
