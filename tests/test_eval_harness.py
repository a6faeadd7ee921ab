"""The evaluation harness end to end on tiny random BERT and MPNet bases, three seeds, a few dozen examples.

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
    results = run(settings, root / "results", root / "work", root)
    return results, root, settings


def runs_of(results: dict, base: str | None = None) -> list[dict]:
    return [run for name, b in results["bases"].items() if base in (None, name) for run in b["runs"]]


def test_every_base_runs_every_seed(quick_run) -> None:
    results, _, settings = quick_run
    assert settings.bases == ("tiny-bert", "tiny-mpnet") and settings.seeds == (0, 1, 2)
    assert list(results["bases"]) == list(settings.bases) and results["complete"] is True
    for name, base in results["bases"].items():
        assert [(r["base"], r["seed"]) for r in base["runs"]] == [(name, s) for s in settings.seeds]
        assert base["summary"]["seeds"] == [0, 1, 2]
    assert results["tasks"] == ["bbc", "tweets", "wordnet"]


def test_the_two_bases_are_two_families(quick_run) -> None:
    from transformers import AutoConfig

    _, root, _ = quick_run
    kinds = {name: AutoConfig.from_pretrained(str(root / "bases" / name)).model_type for name in ("tiny-bert", "tiny-mpnet")}
    assert kinds == {"tiny-bert": "bert", "tiny-mpnet": "mpnet"}


def test_individual_table_has_one_row_per_codec(quick_run) -> None:
    results, _, settings = quick_run
    for run in runs_of(results):
        rows = run["individual"]
        scope = settings.scope_for(run["base"])
        assert [r["codec"] for r in rows] == [c.spec for c in scope.codecs]
        n = 16 if run["base"] == "tiny-mpnet" else 24  # the light scope scores the test split's first 16 examples
        assert scope.test_examples == (16 if run["base"] == "tiny-mpnet" else None)
        for row in rows:
            assert set(row["accuracy"]) == set(settings.tasks)
            assert all(len(row["correct"][t]) == n and set(row["correct"][t]) <= {"0", "1"} for t in settings.tasks)
            assert row["accuracy"] == {t: row["correct"][t].count("1") / n for t in settings.tasks}
            assert row["bytes_per_param"] > 0 and row["ratio_vs_fp32"] > 0
        assert all(len(run["fp32_correct"][t]) == len(run["zero_correct"][t]) == n for t in settings.tasks)


def test_lossless_round_trip_gives_identical_outcomes(quick_run) -> None:
    results, _, settings = quick_run
    for run in runs_of(results):
        lossless = next(r for r in run["individual"] if r["codec"] == "lossless")
        assert lossless["path"] == "push"
        assert lossless["correct"] == run["fp32_correct"]  # example by example, not only on average
        # the rebuilt weights hash like the fine-tunes' own, so their scores were reused, not re-measured
        assert run["evaluations"]["reused_identical_weights"] >= len(settings.tasks)
        assert lossless["rel_l2"] == 0.0


def test_summary_intervals_are_bootstrap_over_seeds_and_examples(quick_run) -> None:
    results, _, settings = quick_run
    for name, base in results["bases"].items():
        rows = {r["codec"]: r for r in base["summary"]["individual"]}
        assert list(rows) == [c.spec for c in settings.scope_for(name).codecs]
        lossless = rows["lossless"]
        for task in settings.tasks:
            acc = lossless["tasks"][task]["accuracy"]
            assert acc["value"] == pytest.approx(base["summary"]["fp32"][task]["fp32"])
            assert acc["low"] <= acc["value"] <= acc["high"]
            retained = lossless["tasks"][task]["retained"]  # paired with fp32: exactly 1, no spread
            if retained["value"] is not None:
                assert retained == {"value": 1.0, "low": 1.0, "high": 1.0}
        assert set(rows["quant:bits=4"]["average"]) == {"accuracy", "retained", "gain_kept"}


def test_target_and_budget_tables(quick_run) -> None:
    results, _, settings = quick_run
    for base in results["bases"].values():
        summary = base["summary"]
        assert summary["target"]["retained"] == 0.99 and summary["target"]["gain_kept"] == 0.95
        assert list(summary["target"]["smallest"]) == [*settings.tasks, "all"]
        assert list(summary["budgets"]) == ["8", "16", "32"]
        for budget, rows in summary["budgets"].items():
            assert all(r["bits_per_param"] <= float(budget) for r in rows)  # no quick setting asks for these budgets
            assert len({r["codec"].partition(":")[0] for r in rows}) == len(rows)  # one setting per family
        assert "lossless" in [r["codec"] for r in summary["budgets"]["32"]]
        assert "lossless" not in [r["codec"] for r in summary["budgets"]["16"]]


def test_a_budget_setting_stays_in_its_budget_even_a_little_above() -> None:
    from benchmarks.eval.aggregate import at_budgets

    def row(codec: str, path: str, bits: float, acc: float) -> dict:
        return {"codec": codec, "path": path, "bits_per_param": bits, "average": {"accuracy": {"value": acc}}}

    rows = [row("mixed:bits=0.5", "pack", 0.503, 0.9), row("quant:bits=2", "push", 0.58, 0.95),
            row("sign:density=0.05", "push", 0.31, 0.8), row("rtvq:bits=1.0", "pack", 1.2, 0.93)]
    table = at_budgets(rows, (0.25, 0.5, 1.0))
    assert {k: [r["codec"] for r in v] for k, v in table.items()} == {
        "0.25": [], "0.5": ["mixed:bits=0.5", "sign:density=0.05"],
        "1": ["quant:bits=2", "rtvq:bits=1.0", "mixed:bits=0.5", "sign:density=0.05"],
    }


def test_group_codecs_are_registry_packs(quick_run) -> None:
    results, _, settings = quick_run
    for run in runs_of(results):
        rtvq = next(r for r in run["individual"] if r["codec"] == "rtvq:base_bits=3,offset_bits=2")
        assert rtvq["path"] == "pack"
        assert all(ref.endswith("@2") for ref in rtvq["refs"].values())  # a new version of each lossless vector
        assert 0.0 < rtvq["rel_l2"] < 1.0
    for run in runs_of(results, "tiny-bert"):
        packed = [r for r in run["merges"] if r["method"] == "tall_mask"]
        assert packed and all(set(r["accuracy"]) == set(settings.tasks) for r in packed)


def test_merge_table_covers_every_method(quick_run) -> None:
    results, _, settings = quick_run
    merges = settings.scope_for("tiny-bert").merges
    for run in runs_of(results, "tiny-bert"):
        rows = run["merges"]
        assert [(r["method"], r["codec"]) for r in rows] == [(m.label, "lossless") for m in merges]
        for row in rows:
            assert set(row["accuracy"]) == set(settings.tasks) and 0.0 <= row["avg_accuracy"] <= 1.0
            assert row["vs_fp32_merge"] == 1.0
    summary = results["bases"]["tiny-bert"]["summary"]["merges"]
    assert [r["method"] for r in summary] == [m.label for m in merges]
    assert all(r["vs_fp32_merge"] == {"value": 1.0, "low": 1.0, "high": 1.0} for r in summary)  # paired: exactly
    # the second base's scope has no merges: no run, no row, no validation scores
    assert settings.scope_for("tiny-mpnet").merges == () and results["bases"]["tiny-mpnet"]["summary"]["merges"] == []
    assert all(list(run["fp32"][t]) == ["test"] for run in runs_of(results, "tiny-mpnet") for t in settings.tasks)
    assert all(list(run["fp32"][t]) == ["test", "val"] for run in runs_of(results, "tiny-bert") for t in settings.tasks)


def test_outputs_written(quick_run) -> None:
    results, root, _ = quick_run
    out = root / "results"
    assert json.loads((out / "eval_results.json").read_text())["tasks"] == results["tasks"]
    assert (out / "eval_accuracy_vs_bytes.png").stat().st_size > 1000
    tables = (out / "eval_tables.md").read_text()
    for base in ("tiny-bert", "tiny-mpnet"):
        assert f"### {base}: smallest setting keeping >= 99% of fp32 accuracy and >= 95% of the gain" in tables
        assert f"### {base}: codecs at 8 / 16 / 32 bit per parameter" in tables


def test_readme_block_is_the_reports_own_tables(quick_run, tmp_path: Path) -> None:
    from benchmarks.eval.report import README_BEGIN, README_END, update_readme

    _, root, _ = quick_run
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{README_BEGIN}\nstale\n{README_END}\noutro\n")
    assert update_readme(readme, root / "results" / "eval_results.json") is True
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "stale" not in text
    assert "### tiny-mpnet: codecs at 8 / 16 / 32 bit per parameter" in text
    assert update_readme(readme, root / "results" / "eval_results.json") is False  # idempotent
    with pytest.raises(ValueError, match="has no <!-- eval:begin --> ... <!-- eval:end --> block"):
        update_readme(root / "results" / "eval_tables.md", root / "results" / "eval_results.json")


def test_cached_finetunes_are_reused(quick_run) -> None:
    from benchmarks.eval.data import load_tasks
    from benchmarks.eval.finetune import finetune_task

    _, root, settings = quick_run
    task = load_tasks(["bbc"], settings.finetune.sizes, settings.split_seed)["bbc"]
    path = finetune_task(task, root / "bases" / "tiny-bert", settings.finetune, root / "finetunes")
    before = path.joinpath("model.safetensors").stat().st_mtime_ns
    again = finetune_task(task, root / "bases" / "tiny-bert", settings.finetune, root / "finetunes")
    assert again == path and again.joinpath("model.safetensors").stat().st_mtime_ns == before


def test_a_codec_that_fails_stops_the_run(quick_run) -> None:
    """A failure is an error, never a quiet ``n/a`` row: the run raises with the registry's own message."""
    from benchmarks.eval.harness import run
    from benchmarks.eval.settings import CodecSetting

    _, root, settings = quick_run
    scope = replace(settings.scope, codecs=(settings.scope.codecs[0], CodecSetting("nosuchcodec")), merges=())
    broken = replace(settings, bases=("tiny-bert",), scope=scope)
    with pytest.raises(CodecError, match="unknown codec 'nosuchcodec'"):
        run(broken, root / "broken-results", root / "broken-work", root)
    assert not (root / "broken-results").exists()


def test_unknown_base_is_one_clear_error(tmp_path: Path) -> None:
    from benchmarks.eval.bases import base_dir

    with pytest.raises(ValueError, match="^unknown base 'gpt2': choose from minilm, mpnet, tiny-bert, tiny-mpnet$"):
        base_dir("gpt2", tmp_path)


def test_lora_export_rows_one_per_rank(quick_run) -> None:
    results, _, settings = quick_run
    assert [run["lora_export"] for run in runs_of(results, "tiny-mpnet")] == [[], [], []]
    for run in runs_of(results, "tiny-bert"):
        rows = run["lora_export"]
        assert [r["rank"] for r in rows] == [8] == list(settings.scope.lora_ranks)
        for row in rows:
            assert row["path"] == "lora" and set(row["accuracy"]) == set(settings.tasks)
            assert 0.0 <= row["avg_accuracy"] <= 1.0 and row["bytes_per_param"] > 0 and 0.0 < row["rel_l2"] < 1.0


def test_per_task_heads_merge_scores_each_task_like_the_in_memory_merge(quick_run) -> None:
    results, _, settings = quick_run
    for run in runs_of(results, "tiny-bert"):
        by_key = {(r["method"], r["codec"]): r for r in run["merges"]}
        per_task, in_memory = by_key[("task_arithmetic_per_task", "lossless")], by_key[("task_arithmetic", "lossless")]
        assert per_task["lambda"] == in_memory["lambda"]
        assert per_task["correct"] == in_memory["correct"]  # the same encoder bits, each task's own head
        assert set(per_task["accuracy"]) == set(settings.tasks)


def test_each_base_states_where_its_numbers_come_from(quick_run) -> None:
    results, _, settings = quick_run
    for base in results["bases"].values():
        assert base["complete"] is True and base["command"] == "" and base["torch_threads"] == 1
        assert set(base["machine"]) >= {"load_before", "load_after", "commit", "cores", "cpu", "started"}
    tables = (quick_run[1] / "results" / "eval_tables.md").read_text()
    assert "tiny-bert: ``, complete, " in tables and "Load average (1/5/15 min) before" in tables


def test_a_base_rerun_alone_keeps_the_other_bases_entry(quick_run, tmp_path: Path) -> None:
    """Bases can run as separate invocations: each rewrites only its own entry of the results file."""
    import shutil

    from benchmarks.eval.harness import record_base

    results, root, settings = quick_run
    out = tmp_path / "results"
    shutil.copytree(root / "results", out)
    rerun = {**results["bases"]["tiny-mpnet"], "command": "python -m benchmarks.eval.harness --quick --base tiny-mpnet"}
    merged = record_base(out, settings, "tiny-mpnet", rerun)
    assert list(merged["bases"]) == ["tiny-bert", "tiny-mpnet"] and merged["complete"] is True
    assert merged["bases"]["tiny-bert"] == results["bases"]["tiny-bert"]
    on_disk = json.loads((out / "eval_results.json").read_text())
    assert on_disk["bases"]["tiny-mpnet"]["command"] == rerun["command"]
    # an entry still missing seeds makes the whole file partial
    partial = record_base(out, settings, "tiny-bert", {**results["bases"]["tiny-bert"], "complete": False})
    assert partial["complete"] is False and "tiny-bert: ``, partial (3 of its seeds so far)" in (out / "eval_tables.md").read_text()
    # one base's scope may change: the other base's entry stays, each entry names its own scope
    fewer = replace(settings.scope_for("tiny-mpnet"), codecs=settings.scope.codecs[:1])
    rescoped = record_base(out, replace(settings, scopes=(("tiny-mpnet", fewer),)), "tiny-mpnet", rerun)
    assert list(rescoped["bases"]) == ["tiny-bert", "tiny-mpnet"]
    assert [c["spec"] for c in rescoped["bases"]["tiny-mpnet"]["scope"]["codecs"]] == ["lossless"]
    assert rescoped["bases"]["tiny-bert"]["runs"] == results["bases"]["tiny-bert"]["runs"]
    # other shared settings (here: another seed list) never share a file: it starts afresh
    other = record_base(out, replace(settings, seeds=(0,)), "tiny-mpnet", rerun)
    assert list(other["bases"]) == ["tiny-mpnet"] and other["complete"] is False


def test_a_merge_source_must_be_a_measured_setting() -> None:
    from benchmarks.eval.settings import CODECS, Scope

    assert Scope().merge_sources == ("svdmix:rank=32,top=8", "mixed:bits=0.5")
    with pytest.raises(ValueError, match="^merge source 'sign:density=0.3' is not among the scope's codec settings$"):
        Scope(codecs=CODECS, merge_sources=("sign:density=0.3",))


def test_resume_runs_only_the_missing_seeds(quick_run, tmp_path: Path) -> None:
    """A stopped run continues: the recorded seeds are kept with their provenance, only the missing one runs."""
    import shutil

    from benchmarks.eval.harness import record_base, run

    results, root, settings = quick_run
    out = tmp_path / "results"
    shutil.copytree(root / "results", out)
    recorded = results["bases"]["tiny-mpnet"]
    stopped = {**recorded, "runs": recorded["runs"][:2], "complete": False, "command": "first invocation"}
    record_base(out, settings, "tiny-mpnet", stopped)
    one_base = replace(settings, bases=("tiny-mpnet",))
    resumed = run(one_base, out, root / "work", root, settings.bases, "second invocation", resume=True)
    entry = resumed["bases"]["tiny-mpnet"]
    assert [r["seed"] for r in entry["runs"]] == [0, 1, 2] and entry["complete"] is True and resumed["complete"] is True
    assert entry["runs"][:2] == recorded["runs"][:2]
    assert entry["runs"][2]["individual"] == recorded["runs"][2]["individual"]  # same cached fine-tunes, same scores
    assert [(p["seeds"], p["command"]) for p in entry["earlier"]] == [([0, 1], "first invocation")]
    assert entry["command"] == "second invocation" and resumed["bases"]["tiny-bert"] == results["bases"]["tiny-bert"]
    tables = (out / "eval_tables.md").read_text()
    assert "Seed(s) 0, 1 come from an earlier run (resumed): `first invocation`" in tables
    # nothing left to run: the file as it stands, untouched
    on_disk = (out / "eval_results.json").read_text()
    assert run(one_base, out, root / "work", root, settings.bases, "third", resume=True) == json.loads(on_disk)
    assert (out / "eval_results.json").read_text() == on_disk
    # a scope that differs cannot be continued
    fewer = replace(settings.scope_for("tiny-mpnet"), codecs=settings.scope.codecs[:1])
    rescoped = replace(one_base, scopes=(("tiny-mpnet", fewer),))
    with pytest.raises(SystemExit, match="^cannot resume tiny-mpnet: its recorded scope differs from this run's; "
                                         "run without --resume$"):
        run(rescoped, out, root / "work", root, settings.bases, "fourth", resume=True)
