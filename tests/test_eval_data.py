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


def test_wordnet_entry_parses_lemmas_gloss_and_lexicographer_file() -> None:
    from benchmarks.eval.data import wordnet_entry

    line = ("07716358 13 n 02 zucchini 0 courgette 0 002 @ 07715721 n 0000 #p 12159804 n 0000 | "
            "small cucumber-shaped vegetable marrow; typically dark green  ")
    assert wordnet_entry(line, {13: "noun.food"}) == (
        "zucchini, courgette: small cucumber-shaped vegetable marrow; typically dark green", "noun.food")
    assert wordnet_entry("  1 This software and database is being provided", {}) is None  # licence header


def test_wordnet_task_is_the_packaged_database_in_ten_supersenses() -> None:
    from collections import Counter

    from benchmarks.eval.data import WORDNET_SUPERSENSES, load_task, read_wordnet

    labels, examples = read_wordnet()
    assert labels == WORDNET_SUPERSENSES and len(labels) == 10
    assert len(examples) == 63245 == len(dedupe(examples))  # every synset's "lemmas: gloss" is distinct
    counts = Counter(label for _, label in examples)
    assert [counts[i] for i in range(10)] == [11587, 11087, 8030, 7509, 6650, 5607, 3544, 3209, 3039, 2983]
    task = load_task("wordnet")
    assert (len(task.train), len(task.val), len(task.test)) == (1000, 200, 500)
    assert task.test[0] == ("chervil, beaked parsley, Anthriscus cereifolium: aromatic annual Old World herb cultivated "
                            "for its finely divided and often curly leaves for use especially in soups and salads", 2)


def test_default_tasks_replace_drug_reviews_with_wordnet() -> None:
    from benchmarks.eval.data import DEFAULT_TASKS, READERS, load_tasks

    assert DEFAULT_TASKS == ("bbc", "tweets", "wordnet") and set(READERS) == set(DEFAULT_TASKS)
    assert list(load_tasks(sizes=Sizes(train=10, val=5, test=5))) == ["bbc", "tweets", "wordnet"]
