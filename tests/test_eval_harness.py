"""The evaluation harness end to end on a tiny random BERT and a few dozen examples.

Checks the shape of every table, that fp32 (lossless) round trips through
the registry rebuild the fine-tunes bit for bit (same weights digest, so the
same accuracy), and that group codecs and TALL/EMR go through ``Registry.pack``.  The
full MiniLM run stays out of the default suite (``python -m benchmarks.eval.harness``).
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from tvstore.errors import CodecError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` lives at the repository root


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, object]:
    from benchmarks.eval.harness import run
    from benchmarks.eval.settings import quick_settings

    root = tmp_path_factory.mktemp("eval")
    settings = quick_settings()
    results = run(settings, root / "results", root / "work", root / "finetunes", base_dir=root / "tiny-base")
    return results, root, settings


def test_individual_table_has_one_row_per_codec(quick_run) -> None:
    results, _, settings = quick_run
    rows = results["individual"]
    assert [r["codec"] for r in rows] == [c.spec for c in settings.codecs]
    for row in rows:
        assert set(row["accuracy"]) == set(settings.tasks)
        assert row["bytes_per_param"] > 0 and row["ratio_vs_fp32"] > 0


def test_lossless_round_trip_gives_identical_accuracy(quick_run) -> None:
    results, _, settings = quick_run
    lossless = next(r for r in results["individual"] if r["codec"] == "lossless")
    assert lossless["path"] == "push"
    assert lossless["accuracy"] == {t: results["fp32"][t]["test"] for t in settings.tasks}
    # the rebuilt weights hash like the fine-tunes' own, so their scores were reused, not re-measured
    assert results["evaluations"]["reused_identical_weights"] >= len(settings.tasks)
    assert lossless["rel_l2"] == 0.0
    assert lossless["avg_retained"] == 1.0


def test_group_codecs_are_registry_packs(quick_run) -> None:
    results, _, settings = quick_run
    rtvq = next(r for r in results["individual"] if r["codec"] == "rtvq:base_bits=3,offset_bits=2")
    assert rtvq["path"] == "pack"
    assert all(ref.endswith("@2") for ref in rtvq["refs"].values())  # a new version of each lossless vector
    assert 0.0 < rtvq["rel_l2"] < 1.0
    packed = [r for r in results["merges"] if r["method"] in ("tall_mask", "emr")]
    assert packed and all(set(r["normalized"]) == set(settings.tasks) for r in packed)


def test_merge_table_covers_every_method_for_fp32_and_each_chosen_codec(quick_run) -> None:
    results, _, settings = quick_run
    rows = results["merges"]
    codecs = list(dict.fromkeys(r["codec"] for r in rows))
    assert codecs[0] == "lossless" and len(codecs) == 1 + len(settings.merge_families)
    assert len(rows) == len(codecs) * len(settings.merges)
    for row in rows:
        assert set(row["normalized"]) == set(settings.tasks)
        assert 0.0 <= row["avg_accuracy"] <= 1.0
    for row in (r for r in rows if r["codec"] == "lossless"):
        assert row["vs_fp32_merge"] == 1.0


def test_outputs_written(quick_run) -> None:
    results, root, _ = quick_run
    out = root / "results"
    assert json.loads((out / "eval_results.json").read_text())["tasks"] == results["tasks"]
    assert (out / "eval_accuracy_vs_bytes.png").stat().st_size > 1000
    assert "Individual" in (out / "eval_tables.md").read_text()


def test_cached_finetunes_are_reused(quick_run) -> None:
    from benchmarks.eval.data import load_tasks
    from benchmarks.eval.finetune import finetune_task

    _, root, settings = quick_run
    task = load_tasks(["bbc"], settings.finetune.sizes, settings.finetune.seed)["bbc"]
    path = finetune_task(task, root / "tiny-base", settings.finetune, root / "finetunes")
    before = path.joinpath("model.safetensors").stat().st_mtime_ns
    again = finetune_task(task, root / "tiny-base", settings.finetune, root / "finetunes")
    assert again == path and again.joinpath("model.safetensors").stat().st_mtime_ns == before


def test_a_codec_that_fails_stops_the_run(quick_run) -> None:
    """A failure is an error, never a quiet ``n/a`` row: the run raises with the registry's own message."""
    from benchmarks.eval.harness import run
    from benchmarks.eval.settings import CodecSetting

    _, root, settings = quick_run
    broken = replace(settings, codecs=(settings.codecs[0], CodecSetting("nosuchcodec")), merges=())
    with pytest.raises(CodecError, match="unknown codec 'nosuchcodec'"):
        run(broken, root / "broken-results", root / "broken-work", root / "finetunes", base_dir=root / "tiny-base")
    assert not (root / "broken-results").exists()


def test_lora_export_rows_one_per_rank(quick_run) -> None:
    results, _, settings = quick_run
    rows = results["lora_export"]
    assert [r["rank"] for r in rows] == [8, 16, 64] == list(settings.lora_ranks)
    for row in rows:
        assert row["path"] == "lora" and set(row["accuracy"]) == set(settings.tasks)
        assert 0.0 <= row["avg_accuracy"] <= 1.0 and row["bytes_per_param"] > 0
    assert rows[0]["bytes_per_param"] < rows[1]["bytes_per_param"] < rows[2]["bytes_per_param"]
    assert rows[0]["rel_l2"] > rows[1]["rel_l2"] > rows[2]["rel_l2"]
    assert "## LoRA export" in (Path(quick_run[1]) / "results" / "eval_tables.md").read_text()


def test_per_task_heads_merge_scores_each_task_like_the_in_memory_merge(quick_run) -> None:
    results, _, settings = quick_run
    by_key = {(r["method"], r["codec"]): r for r in results["merges"]}
    codecs = {r["codec"] for r in results["merges"]}
    for codec in codecs:
        per_task, in_memory = by_key[("task_arithmetic_per_task", codec)], by_key[("task_arithmetic", codec)]
        assert per_task["lambda"] == in_memory["lambda"]
        assert per_task["accuracy"] == in_memory["accuracy"]  # the same encoder bits, each task's own head
        assert set(per_task["accuracy"]) == set(settings.tasks)
