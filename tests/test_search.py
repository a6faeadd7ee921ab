"""Score-steered search through the installed CLI, with a real scoring script on the tiny model.

The script reads the rebuilt checkpoint and prints ``1 / (1 + ||theta - want|| / ||want - base||)``
(1.0 exactly when the checkpoint is ``want``): a stand-in for an accuracy that falls as the
weights move away from the fine-tune, cheap enough to run a dozen times per test.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from tvstore.errors import TvstoreError
from tvstore.ops.search import ScoreCache, SearchAxis
from tvstore.tensors.codec_plan import parse_plan_codec

SCRIPT = """\
import sys
import numpy as np
from safetensors.numpy import load_file

got = load_file(sys.argv[1] + "/model.safetensors")
want, base = load_file(sys.argv[2]), load_file(sys.argv[3])
keys = [k for k in base if base[k].dtype.kind == "f"]
dist = sum(float(((got[k].astype(np.float64) - want[k]) ** 2).sum()) for k in keys) ** 0.5
size = sum(float(((want[k].astype(np.float64) - base[k]) ** 2).sum()) for k in keys) ** 0.5
print("scoring", sys.argv[1], file=sys.stderr)
print(1.0 / (1.0 + dist / size))
"""


@pytest.fixture
def scorer(tmp_path: Path, tiny) -> tuple[Path, Path]:
    """(script, base weights file) for a score command line."""
    script = tmp_path / "score.py"
    script.write_text(SCRIPT)
    return script, tiny.base / "model.safetensors"


def command(scorer: tuple[Path, Path], want: Path) -> str:
    script, base = scorer
    return f"{sys.executable} {script} {{dir}} {want} {base}"


def run_script(scorer: tuple[Path, Path], directory: Path, want: Path) -> float:
    import subprocess

    line = command(scorer, want).replace("{dir}", str(directory))
    return float(subprocess.run(line, shell=True, check=True, capture_output=True, text=True).stdout)


def test_push_finds_the_smallest_codec_keeping_the_score(registry, tiny, cli, scorer, tmp_path: Path) -> None:
    registry.add_base("bert", tiny.base)
    ft = tiny.finetunes["alpha"]
    cmd = command(scorer, ft / "model.safetensors")
    pushed = json.loads(cli("push", "alpha", ft, "--base", "bert", "--codec", "auto", "--target", "0.8",
                            "--score-cmd", cmd, "--json").stdout)
    found = pushed["meta"]["search"]
    assert found["command"] == cmd and found["target"] == 0.8 and found["reference_score"] == 1.0
    trail = found["trail"]
    assert trail[0] == {"setting": "lossless", "score": 1.0, "cached": False}
    passing = [t for t in trail[1:] if t["score"] >= 0.8]
    assert passing and found["setting"] == min(passing, key=lambda t: t["stored_bytes"])["setting"]
    assert any(t["score"] < 0.8 for t in trail)  # the bisection went past the target somewhere
    chosen = next(t for t in trail if t["setting"] == found["setting"])
    assert found["score"] == chosen["score"] >= 0.8
    assert pushed["stored_bytes"] < 0.2 * pushed["raw_bytes"]
    # what was scored is what was stored: the pulled rebuild scores the same, to the last digit
    cli("pull", "alpha", "--checkpoint", "--out", tmp_path / "rebuilt")
    assert run_script(scorer, tmp_path / "rebuilt", ft / "model.safetensors") == found["score"]
    shown = cli("show", "alpha").stdout
    assert f"search: {found['setting']} scored {found['score']:g} (target 0.8 x reference 1)" in shown
    assert "search trail: lossless 1;" in shown and "bit/param" in shown


def test_push_search_with_a_python_callable(registry, tiny) -> None:
    registry.add_base("bert", tiny.base)
    want, base = tiny.tensors(tiny.finetunes["beta"]), tiny.tensors(tiny.base)
    seen: list[Path] = []

    def score(directory: Path) -> float:
        seen.append(directory)
        got = load_file(directory / "model.safetensors")
        dist = sum(float((got[k].double() - want[k].double()).norm() ** 2) for k in base) ** 0.5
        size = sum(float((want[k].double() - base[k].double()).norm() ** 2) for k in base) ** 0.5
        return 1.0 / (1.0 + dist / size)

    info = registry.push_searched("beta", tiny.finetunes["beta"], base="bert", score=score, target=0.9)
    found = info.meta["search"]
    assert found["command"] == "(python callable)" and found["reference_score"] == 1.0
    assert len(seen) == sum(not t["cached"] for t in found["trail"]) and len(seen) >= 8
    assert found["score"] >= 0.9 and info.codec == parse_plan_codec(found["setting"]).get_config()


def test_score_cache_scores_each_digest_once(tmp_path: Path) -> None:
    calls: list[Path] = []
    cache = ScoreCache(lambda d: calls.append(d) or 0.5)
    write = lambda d: d.mkdir()  # noqa: E731
    assert cache("abc", write) == (0.5, False)
    assert cache("abc", write) == (0.5, True)
    assert cache("def", write) == (0.5, False)
    assert len(calls) == 2


def test_failing_and_non_numeric_score_commands_are_one_line_errors(registry, tiny, cli, tmp_path: Path) -> None:
    registry.add_base("bert", tiny.base)
    ft = tiny.finetunes["alpha"]
    bad = tmp_path / "bad.py"
    bad.write_text("import sys\nprint('loading', file=sys.stderr)\nprint('model missing: ' + sys.argv[1][-10:], file=sys.stderr)\nsys.exit(3)\n")
    cmd = f"{sys.executable} {bad} {{dir}}"
    run = cli("push", "alpha", ft, "--base", "bert", "--codec", "auto", "--score-cmd", cmd, expect=1)
    assert run.stderr.strip() == f"error: score command {cmd!r} failed (exit 3): loading | model missing: checkpoint"
    words = tmp_path / "words.py"
    words.write_text("print('accuracy: high')\n")
    cmd = f"{sys.executable} {words} {{dir}}"
    run = cli("push", "alpha", ft, "--base", "bert", "--codec", "auto", "--score-cmd", cmd, expect=1)
    assert run.stderr.strip() == f"error: score command {cmd!r} printed 'accuracy: high', not a number"
    assert registry.list() == []  # nothing half-written
    run = cli("push", "alpha", ft, "--base", "bert", "--codec", "auto", "--score-cmd", "python eval.py", expect=2)
    assert run.stderr.strip() == "error: --score-cmd must contain {dir} (where the rebuilt checkpoint goes), got 'python eval.py'"
    run = cli("push", "alpha", ft, "--base", "bert", "--codec", "lossless", "--score-cmd", cmd, expect=2)
    assert run.stderr.strip() == "error: --score-cmd goes with --codec auto (the search picks the codec)"
    run = cli("push", "alpha", ft, "--base", "bert", "--codec", "auto", "--score-cmd", cmd, "--target", "1.5", expect=2)
    assert run.stderr.strip() == "error: --target must be a number in (0, 1], got 1.5"


def test_merge_search_finds_lambda_and_saves_the_best(registry, tiny, cli, scorer, tmp_path: Path) -> None:
    registry.add_base("bert", tiny.base)
    for task in ("alpha", "beta"):
        registry.push(task, tiny.finetunes[task], base="bert")
    base = tiny.tensors(tiny.base)
    fts = [tiny.tensors(tiny.finetunes[t]) for t in ("alpha", "beta")]
    want = {k: base[k] + 0.3 * ((fts[0][k] - base[k]) + (fts[1][k] - base[k])) for k in base}
    save_file(want, tmp_path / "want.safetensors")
    recipe = tmp_path / "ta.yml"
    recipe.write_text("method: task_arithmetic\ninputs: [alpha, beta]\nparams: {lambda: 1.0}\n")
    cmd = command(scorer, tmp_path / "want.safetensors")
    out = json.loads(cli("merge", "--recipe", recipe, "--search", "lambda=0.1:0.5", "--score-cmd", cmd,
                         "--save-as", "pair", "--json").stdout)
    found = out["search"]
    assert found["setting"] == "lambda=0.3"
    assert [t["setting"] for t in found["trail"]] == ["as written"] + [f"lambda={v}" for v in (0.1, 0.2, 0.3, 0.4, 0.5)]
    assert found["score"] == max(t["score"] for t in found["trail"]) > found["reference_score"]
    assert out["recipe"]["params"] == {"lambda": 0.3} and out["saved"] == "pair@1"
    saved = registry.show("pair")
    assert saved.recipe["params"] == {"lambda": 0.3} and saved.meta["search"]["setting"] == "lambda=0.3"
    cli("pull", "pair", "--checkpoint", "--out", tmp_path / "pair")
    assert run_script(scorer, tmp_path / "pair", tmp_path / "want.safetensors") == found["score"]
    # per-input weights: beta's weight at 0.3 with alpha's at 0.3 as well is the best again
    two = json.loads(cli("merge", "--recipe", recipe, "--search", "lambda=0.3:0.3:2", "--search", "alpha.weight=0:2",
                         "--score-cmd", cmd, "--json").stdout)["search"]
    assert two["setting"] == "lambda=0.3,alpha.weight=1"
    assert [t["cached"] for t in two["trail"]][:3] == [False, False, True]  # lambda=0.3 twice: scored once


def test_merge_search_refuses_bad_input(registry, tiny, cli, tmp_path: Path) -> None:
    recipe = tmp_path / "ta.yml"
    recipe.write_text("method: task_arithmetic\ninputs: [alpha]\n")
    run = cli("merge", "--recipe", recipe, "--search", "lambda=0.1", "--score-cmd", "x {dir}", expect=2)
    assert run.stderr.strip() == "error: bad --search 'lambda=0.1': expected KEY=LO:HI or KEY=LO:HI:N, e.g. lambda=0.1:1.0"
    run = cli("merge", "--recipe", recipe, "--search", "lambda=0.1:1", expect=2)
    assert run.stderr.strip() == "error: --search goes with --score-cmd (the command that scores a merged checkpoint)"
    assert SearchAxis.parse("weight=0:1:3").values == (0.0, 0.5, 1.0)
    with pytest.raises(TvstoreError, match="the recipe has no input 'gamma'"):
        registry.add_base("bert", tiny.base)
        registry.push("alpha", tiny.finetunes["alpha"], base="bert")
        registry.search_merge(recipe, ["gamma.weight=0:1"], lambda d: 1.0)
