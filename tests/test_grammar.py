"""One parser per grammar: codec specs, sizes, --codec-for rules and recipes read the same way everywhere.

Each test drives the installed CLI where a user would meet the grammar and
asserts the exact error line, the exit code and that nothing was written.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from refusals import assert_refused, ready  # noqa: F401  (ready is a fixture)

from tvstore.blobs.cache_config import cache_settings
from tvstore.blobs.s3_config import S3Settings
from tvstore.codecs import codec_ids
from tvstore.errors import CodecError, UsageError
from tvstore.ops.pack import PackSpec
from tvstore.tensors.codec_plan import CodecPlan
from tvstore.util.units import parse_size


def test_codec_specs_through_the_cli(ready, tiny) -> None:
    """A repeated key is refused; unknown codecs list auto; --max-error is read by the spec parser."""
    push = ("push", "x", tiny.finetunes["gamma"], "--base", "bert")
    assert_refused(ready, (*push, "--codec", "quant:bits=4,bits=8"),
                   "codec parameter 'bits' given twice in 'quant:bits=4,bits=8'")
    known = ", ".join(sorted([*codec_ids(), "auto"]))
    assert "auto" not in codec_ids() and "quant" in known
    assert_refused(ready, (*push, "--codec", "zip"), f"unknown codec 'zip' (known: {known})")
    assert_refused(ready, (*push, "--codec", "auto:max_error=0.1", "--max-error", "0.2"),
                   "max_error given twice (in --codec and as --max-error)")


SPECS = [
    ("sparse:density=0.1,density=0.2", "codec parameter 'density' given twice in 'sparse:density=0.1,density=0.2'"),
    ("quant:bits", "bad codec parameter 'bits' in 'quant:bits': expected key=value"),
    (":bits=4", "bad codec spec ':bits=4': expected ID or ID:key=value,..."),
    ("auto:max_err=0.1", "codec 'auto' has no parameter 'max_err' (parameters: max_error)"),
    ("auto:max_error=0.1,max_error=0.2", "codec parameter 'max_error' given twice in 'auto:max_error=0.1,max_error=0.2'"),
]


@pytest.mark.parametrize("spec, message", SPECS, ids=[s for s, _ in SPECS])
def test_one_codec_spec_parser(spec: str, message: str) -> None:
    with pytest.raises(CodecError) as err:
        CodecPlan.parse("lossless", [f"*={spec}"])
    assert str(err.value) == message


def test_pack_reads_specs_with_the_same_parser() -> None:
    with pytest.raises(UsageError) as err:
        PackSpec.parse("rtvq:bits=2,bits=3")
    assert str(err.value) == "codec parameter 'bits' given twice in 'rtvq:bits=2,bits=3'"
    with pytest.raises(UsageError) as err:
        PackSpec.parse("rtvq:bits")
    assert str(err.value) == "bad codec parameter 'bits' in 'rtvq:bits': expected key=value"
    assert PackSpec.parse("rtvq:bits=2.5,granularity=channel").params == {"bits": 2.5, "granularity": "channel"}


def test_codec_for_matches_case_insensitively_and_a_rule_matching_nothing_is_refused(ready, tiny) -> None:
    assert_refused(ready, ("push", "x", tiny.finetunes["gamma"], "--base", "bert", "--codec", "quant:bits=4",
                           "--codec-for", "*nrm*=lossless"),
                   "--codec-for '*nrm*' matches no tensor of the checkpoint "
                   "(a case-insensitive glob over tensor names, e.g. '*layernorm*')")
    ready("push", "x", tiny.finetunes["gamma"], "--base", "bert", "--codec", "quant:bits=4", "--codec-for", "*norm*=lossless")
    codecs = {t.name: t.codec["id"] for t in ready.registry.tensors("x") if t.role == "delta"}
    norms = {n for n in codecs if "layernorm" in n.lower()}
    assert norms and "embeddings.LayerNorm.weight" in norms
    assert {codecs[n] for n in norms} == {"lossless"}
    assert {c for n, c in codecs.items() if n not in norms} == {"quant"}


@pytest.mark.parametrize("text, size", [("64M", 64 << 20), ("64MB", 64 << 20), ("64MiB", 64 << 20), ("5GB", 5 << 30),
                                        ("1.5K", 1536), ("40KB", 40 << 10), ("1024", 1024), ("2 G", 2 << 30)])
def test_one_size_grammar(text: str, size: int, monkeypatch) -> None:
    """--shard-size, TVSTORE_S3_PART_SIZE and TVSTORE_CACHE_MAX_BYTES read sizes with the same parser."""
    assert parse_size(text) == size
    monkeypatch.setenv("TVSTORE_S3_PART_SIZE", text)
    monkeypatch.setenv("TVSTORE_CACHE_MAX_BYTES", text)
    assert S3Settings.from_env().part_size == size
    assert cache_settings()[1] == size


@pytest.mark.parametrize("text", ["huge", "64X", "-1", "nan", "inf", "1e3", ""])
def test_bad_sizes_are_refused_alike(text: str, monkeypatch) -> None:
    message = f"bad size {text!r}: use bytes or a K/M/G/T suffix, e.g. 64M or 5GB"
    with pytest.raises(UsageError) as err:
        parse_size(text)
    assert str(err.value) == message
    monkeypatch.setenv("TVSTORE_S3_PART_SIZE", text or " ")
    if text:
        with pytest.raises(UsageError) as err:
            S3Settings.from_env()
        assert str(err.value) == f"TVSTORE_S3_PART_SIZE: {message}"


def test_shard_size_takes_the_same_units_as_the_environment(ready, tmp_path: Path) -> None:
    ready("pull", "good", "--checkpoint", "--shard-size", "64K", "--out", tmp_path / "ok")
    assert (tmp_path / "ok" / "config.json").exists()
    assert_refused(ready, ("pull", "good", "--checkpoint", "--shard-size", "0", "--out", tmp_path / "zero"),
                   "size must be at least 1 byte, got '0'", out=tmp_path / "zero")


RECIPE_STRUCTURE = [
    ("method: ties\ninputs: [good]\nbasis: bert\n",
     "recipe.basis: unknown field (known: base, dtype, extra_tensors, inputs, method, params)"),
    ("method: [ties]\ninputs: [good]\n", "recipe.method: input should be a valid string, got ['ties']"),
    ("method: ties\ninputs: good\n", "recipe.inputs: input should be a valid list, got 'good'"),
    ("method: ties\ninputs: [5]\n", "recipe.inputs[0]: expected a mapping, got 5"),
    ("method: ties\ninputs: [{weight: 1}]\n", "recipe.inputs[0].ref: missing"),
    ("method: ties\ninputs: []\n", "recipe.inputs: expected a non-empty list"),
    ("method: ties\ninputs: [good]\nparams: [1]\n", "recipe.params: input should be a valid dictionary, got [1]"),
    ("merge_method: ties\nmodels: [{model: good, params: {}}]\n",
     "recipe.models[0].params: unknown field (known: model, parameters)"),
    ("merge_method: ties\nmodels: [{model: good, parameters: 3}]\n",
     "recipe.models[0].parameters: input should be a valid dictionary, got 3"),
    ("merge_method: ties\nbase_model: bert\nmodels: []\n", "recipe.models: expected a non-empty list"),
]


@pytest.mark.parametrize("text, message", RECIPE_STRUCTURE, ids=[m.split(":")[0] for _, m in RECIPE_STRUCTURE])
def test_recipe_structure_errors_name_the_field(text: str, message: str) -> None:
    from tvstore.merge.recipe import load_recipe

    with pytest.raises(UsageError) as err:
        load_recipe(text)
    assert str(err.value) == message


def test_a_recipe_that_is_not_utf8_is_one_line(ready, tmp_path: Path) -> None:
    recipe = tmp_path / "r.yml"
    recipe.write_bytes(b"method: ties\ninputs: [good, other]\n# caf\xe9\n")
    assert_refused(ready, ("merge", "--recipe", recipe, "--out", tmp_path / "out"), f"recipe {recipe} is not UTF-8 text",
                   out=tmp_path / "out")
