"""Every numeric parameter is finite and in range, or refused in one line naming it and its range (exit 2, nothing written).

Through the installed CLI where a user meets the number (recipe weights,
pack options, codec specs); the full tables of ranges are checked on the
parsers those commands call.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from refusals import assert_refused, ready  # noqa: F401  (ready is a fixture)
from safetensors import safe_open

from tvstore.codecs import parse_codec_spec
from tvstore.codecs.lowrank import Lowrank
from tvstore.errors import CodecError, UsageError
from tvstore.merge.recipe import load_recipe
from tvstore.ops.pack import PackSpec


def test_recipe_numbers_through_the_cli(ready, tmp_path: Path) -> None:
    """A .nan weight neither merges (--out) nor registers (--save-as) an all-NaN model."""
    recipe = tmp_path / "r.yml"
    recipe.write_text("method: task_arithmetic\ninputs:\n  - {ref: good, weight: .nan}\n  - other\n")
    message = "inputs[0] (good).weight: must be a finite number, got nan"
    assert_refused(ready, ("merge", "--recipe", recipe, "--save-as", "blend"), message)
    assert_refused(ready, ("merge", "--recipe", recipe, "--out", tmp_path / "out"), message, out=tmp_path / "out")


RECIPE_PARAMS = [
    ("task_arithmetic", "inputs: [{ref: a, weight: .inf}, b]", "inputs[0] (a).weight: must be a finite number, got inf"),
    ("task_arithmetic", "params: {weight: -.inf}", "params.weight: must be a finite number, got -inf"),
    ("ties", "params: {density: -1}", "params.density: must be a number in (0, 1], got -1.0"),
    ("ties", "inputs: [{ref: a, density: 1.5}, b]", "inputs[0] (a).density: must be a number in (0, 1], got 1.5"),
    ("ties", "params: {density: 0}", "params.density: must be a number in (0, 1], got 0.0"),
    ("ties", "params: {density: .nan}", "params.density: must be a number in (0, 1], got nan"),
    ("task_arithmetic", "params: {lambda: .inf}", "params.lambda: must be a finite number, got inf"),
    ("ties", "params: {density: [0.5, 1.2]}", "params.density[1]: must be a number in (0, 1], got 1.2"),
    ("ties", "params: {density: [{filter: mlp, value: -0.1}]}",
     "params.density[0].value: must be a number in (0, 1], got -0.1"),
    ("breadcrumbs", "params: {gamma: 1.0}", "params.gamma: must be a number in [0, 1), got 1.0"),
    ("della", "params: {epsilon: -0.1}", "params.epsilon: must be a number in [0, 1), got -0.1"),
    ("dare_ties", "params: {seed: -1}", "params.seed: must be an integer in 0..9223372036854775807, got -1"),
    ("consensus", "params: {k: 0}", "params.k: must be an integer in 1..2147483647, got 0"),
    ("consensus", "params: {mask_lambda: -0.4}", "params.mask_lambda: must be a number >= 0, got -0.4"),
    ("ties", "params: {weight: '1e400'}", "params.weight: must be a finite number, got inf"),
]


def _recipe(method: str, body: str) -> str:
    """A recipe of ``method`` over inputs a and b, unless ``body`` gives its own inputs."""
    inputs = "" if body.startswith("inputs:") else "inputs: [a, b]\n"
    return f"method: {method}\n{inputs}{body}\n"


@pytest.mark.parametrize("method, params, message", RECIPE_PARAMS, ids=[m for _, _, m in RECIPE_PARAMS])
def test_every_recipe_parameter_has_a_range(method: str, params: str, message: str) -> None:
    with pytest.raises(UsageError) as err:
        load_recipe(_recipe(method, params))
    assert str(err.value) == message


def test_gradients_inside_the_range_still_load() -> None:
    rec = load_recipe("method: ties\ninputs: [a, b]\nparams: {density: [0.2, 1.0], lambda: -1.5, weight: [-1, 2]}\n")
    plan = rec.resolve(["model.layers.0.w", "model.layers.1.w"]).plan("model.layers.1.w")
    assert plan.weights == (2.0, 2.0) and plan.params["density"] == [1.0, 1.0] and plan.params["lambda"] == -1.5


def test_pack_numbers_through_the_cli(ready) -> None:
    """nan/inf lambdas once replaced the inputs' latest versions with all-zero vectors; now nothing is written."""
    pack = ("pack", "good", "other")
    assert_refused(ready, (*pack, "--codec", "tall", "--lambda", "nan"), "pack tall: lambda must be a number in [0, 1], got nan")
    assert_refused(ready, (*pack, "--codec", "rtvq:base_bits=0"), "pack rtvq: base_bits must be an integer in 1..8, got 0")
    assert_refused(ready, (*pack, "--codec", "rtvq", "--bits", "100"), "pack rtvq: bits must be a number in (0, 16], got 100.0")


PACK = [
    ("tall", {"lambda": math.inf}, "pack tall: lambda must be a number in [0, 1], got inf"),
    ("tall", {"lambda": -5.0}, "pack tall: lambda must be a number in [0, 1], got -5.0"),
    ("rtvq", {"bits": math.nan}, "pack rtvq: bits must be a number in (0, 16], got nan"),
    ("rtvq", {"bits": math.inf}, "pack rtvq: bits must be a number in (0, 16], got inf"),
    ("rtvq:offset_bits=9", {}, "pack rtvq: offset_bits must be an integer in 1..8, got 9"),
    ("rtvq:base_bits=2.5", {}, "pack rtvq: base_bits must be an integer in 1..8, got 2.5"),
    ("rtvq:group_size=0,granularity=group", {}, "pack rtvq: group_size must be an integer in 1..2147483647, got 0"),
    ("rtvq:granularity=row", {}, "pack rtvq: granularity must be one of tensor, channel, group, got 'row'"),
    ("emr", {"shared": "quant:bits=9"}, "codec 'quant': bits must be an integer in 1..8, got 9"),
]


@pytest.mark.parametrize("spec, options, message", PACK, ids=[m for _, _, m in PACK])
def test_every_pack_parameter_has_a_range(spec: str, options: dict, message: str) -> None:
    with pytest.raises((UsageError, CodecError)) as err:
        PackSpec.parse(spec, **options)
    assert str(err.value) == message


CODEC_SPECS = [
    ("quant:bits=100", "codec 'quant': bits must be an integer in 1..8, got 100"),
    ("quant:bits=0", "codec 'quant': bits must be an integer in 1..8, got 0"),
    ("quant:bits=4.5", "codec 'quant': bits must be an integer in 1..8, got 4.5"),
    ("quant:group_size=0", "codec 'quant': group_size must be an integer in 1..2147483647, got 0"),
    ("sparse:density=1.5", "codec 'sparse': density must be a number in (0, 1], got 1.5"),
    ("sparse:density=NaN", "codec 'sparse': density must be a number in (0, 1], got nan"),
    ("ternary:density=0", "codec 'ternary': density must be a number in (0, 1], got 0"),
    ("ternary:alpha=Infinity", "codec 'ternary': alpha must be a number > 0, got inf"),
    ("dare:p=1", "codec 'dare': p must be a number in [0, 1), got 1"),
    ("dare:seed=-3", "codec 'dare': seed must be an integer in 0..9223372036854775807, got -3"),
    ("lowrank:rank=0", "codec 'lowrank': rank must be an integer in 1..2147483647, got 0"),
    ("lowrank:rank=null,energy=1.5", "codec 'lowrank': energy must be a number in (0, 1], got 1.5"),
    ("lossless:level=23", "codec 'lossless': level must be an integer in 1..22, got 23"),
    ("lossless:level=3.5", "codec 'lossless': level must be an integer in 1..22, got 3.5"),
    ("sign:density=-0.5", "codec 'sign': density must be a number in (0, 1], got -0.5"),
]


@pytest.mark.parametrize("spec, message", CODEC_SPECS, ids=[s for s, _ in CODEC_SPECS])
def test_every_codec_parameter_has_a_range(spec: str, message: str) -> None:
    with pytest.raises(CodecError) as err:
        parse_codec_spec(spec)
    assert str(err.value) == message


def test_codec_numbers_through_push(ready, tiny) -> None:
    """Out-of-range codec parameters, and a lowrank rank too high for every matrix, are refused before encoding."""
    push = ("push", "x", tiny.finetunes["gamma"], "--base", "bert")
    assert_refused(ready, (*push, "--codec", "quant:bits=100"), "codec 'quant': bits must be an integer in 1..8, got 100")
    with safe_open(str(tiny.base / "model.safetensors"), "pt") as f:
        shapes = [f.get_slice(n).get_shape() for n in f.keys()]
    # largest r with r (m + n) < m n over the model's matrices: the most a rank can usefully be
    best = max(math.ceil(m * n / (m + n)) - 1 for m, n in (s for s in shapes if len(s) == 2))
    assert_refused(ready, (*push, "--codec", "lowrank:rank=100000"),
                   f"codec 'lowrank': rank 100000 is too high for every matrix of this model (its factors would be "
                   f"larger than the matrix); use rank <= {best}")


def test_lowrank_never_stores_factors_larger_than_the_matrix() -> None:
    import torch

    from tvstore.codecs.lossless import Lossless

    matrix = torch.randn(16, 24, generator=torch.Generator().manual_seed(0))
    for codec in (Lowrank(rank=10), Lowrank(rank=None, energy=1.0)):  # 10 * (16 + 24) >= 16 * 24
        payload = codec.encode(matrix)
        assert torch.equal(codec.decode(payload, (16, 24), torch.float32), matrix)  # the exact fallback
        assert len(payload) < len(Lossless().encode(matrix)) + 64
    small = Lowrank(rank=9).encode(matrix)  # 9 * 40 < 384: factors
    assert not torch.equal(Lowrank(rank=9).decode(small, (16, 24), torch.float32), matrix)


def test_a_codec_cannot_skip_the_declared_ranges() -> None:
    """Ranges are checked in Codec.__post_init__; a codec overriding it (and so skipping them) is refused at registration."""
    import dataclasses

    from tvstore.codecs import codec_ids, register_codec
    from tvstore.codecs.lossless import Lossless

    @dataclasses.dataclass(frozen=True)
    class Sloppy(Lossless):
        codec_id = "sloppy"

        def __post_init__(self) -> None:
            pass

    with pytest.raises(TypeError) as err:
        register_codec(Sloppy)
    assert str(err.value) == ("codec 'sloppy' overrides __post_init__: put its checks in validate(), "
                              "so the declared parameter ranges are still checked")
    assert "sloppy" not in codec_ids()
