"""Recipes: references, native and mergekit YAML, filters, gradients, errors; the engine's tensor rules."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from tvstore.errors import UsageError
from tvstore.merge import LazyMerged, Merger, load_recipe, materialize
from tvstore.merge.recipe import layer_count, layer_index
from tvstore.util.refs import Ref, parse_ref

NAMES = [
    "model.embed_tokens.weight",
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.0.mlp.up_proj.weight",
    "model.layers.1.mlp.up_proj.weight",
    "model.layers.2.mlp.up_proj.weight",
    "lm_head.weight",
]


# ---- references --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, ref",
    [("math", Ref("math")), ("math@3", Ref("math", 3)), ("code-v2.1:stable", Ref("code-v2.1", tag="stable")),
     ("a_b@12", Ref("a_b", 12))],
)
def test_parse_ref(text: str, ref: Ref) -> None:
    assert parse_ref(text) == ref
    assert str(ref) == text


@pytest.mark.parametrize("text", ["", "org/model", "../x", "..", "a@", "a@0", "a@x", "a:b:c", "a b", "a@1:t", None, 3])
def test_parse_ref_rejects(text) -> None:
    with pytest.raises(UsageError, match="invalid reference"):
        parse_ref(text)


# ---- native format -----------------------------------------------------------------------------


NATIVE = """
base: llama
method: ties
inputs:
  - ref: math@3
    weight: 0.7
    density: [0.2, 0.6]
  - code:stable
params:
  lambda: 0.9
  density: [{filter: lm_head, value: 1.0}, {value: 0.5}]
dtype: bf16
"""


def test_native_recipe_resolves_per_tensor() -> None:
    rec = load_recipe(NATIVE)
    assert rec.base == Ref("llama") and rec.vectors == [Ref("math", 3), Ref("code", tag="stable")]
    assert rec.dtype == torch.bfloat16 and rec.extra_tensors == "refuse"
    res = rec.resolve(NAMES)
    plan = res.plan("model.layers.1.mlp.up_proj.weight")  # t = 1/2
    assert plan.weights == (0.7, 1.0)  # bare reference: weight 1.0
    assert plan.params["density"] == pytest.approx([0.4, 0.5])  # input gradient beats top-level filter
    assert plan.params["lambda"] == 0.9 and plan.params["normalize"] is True  # TIES default
    assert res.plan("lm_head.weight").params["density"] == pytest.approx([0.2, 1.0])  # t = 0 outside layers
    assert res.plan("model.layers.2.mlp.up_proj.weight").params["density"][0] == pytest.approx(0.6)


def test_layer_positions() -> None:
    assert layer_index("model.layers.12.mlp.w") == 12
    assert layer_index("bert.encoder.layer.3.output.dense.bias") == 3
    assert layer_index("transformer.h.0.attn.c_attn.weight") == 0
    assert layer_index("model.embed_tokens.weight") is None and layer_index("players.3.x") is None
    assert layer_count(NAMES) == 3
    res = load_recipe({"method": "task_arithmetic", "inputs": ["a"], "params": {"weight": [0, 1]}}).resolve(NAMES)
    assert [res.plan(n).weights[0] for n in NAMES] == [0, 0, 0, 0.5, 1.0, 0]
    single = load_recipe({"method": "task_arithmetic", "inputs": ["a"], "params": {"weight": [0, 1]}}).resolve(NAMES[:3])
    assert single.plan(NAMES[1]).weights == (1.0,)  # one layer: t = 1, as mergekit


def test_filters_first_match_then_fall_through() -> None:
    rec = load_recipe("""
method: task_arithmetic
inputs:
  - ref: a
    weight: [{filter: self_attn, value: 2.0}]
params:
  weight: [{filter: mlp, value: [1, 3]}, {filter: "*", value: 0.25}]
""").resolve(NAMES)
    assert rec.plan("model.layers.0.self_attn.q_proj.weight").weights == (2.0,)
    assert rec.plan("model.layers.1.mlp.up_proj.weight").weights == (2.0,)  # no input match -> top-level gradient
    assert rec.plan("lm_head.weight").weights == (0.25,)


def test_string_and_bool_gradients_pick_discretely() -> None:
    rec = load_recipe({"method": "ties", "inputs": ["a", "b"],
                       "params": {"consensus": ["sum", "count"], "normalize": [True, False]}}).resolve(NAMES)
    assert rec.plan(NAMES[3]).params["consensus"] == "sum"  # int(0.5 * 1) = 0
    assert rec.plan(NAMES[4]).params["normalize"] is False


# ---- mergekit format ---------------------------------------------------------------------------


def test_mergekit_yaml() -> None:
    rec = load_recipe("""
merge_method: dare_ties
base_model: llama
models:
  - model: llama
  - model: math@2
    parameters: {weight: 0.5, density: 0.53}
  - model: code
    parameters: {weight: 0.5, density: "5e-1"}
parameters: {int8_mask: true, normalize: false}
dtype: bfloat16
tokenizer_source: union
""")
    assert rec.method.name == "dare_ties" and rec.vectors == [Ref("math", 2), Ref("code")]
    plan = rec.resolve(NAMES).plan(NAMES[0])
    assert plan.weights == (0.5, 0.5) and plan.params["density"] == [0.53, 0.5]
    assert plan.params["rescale"] is True and rec.dtype == torch.bfloat16


def test_mergekit_linear_keeps_base_as_zero_input() -> None:
    rec = load_recipe("""
merge_method: linear
base_model: base
models:
  - model: base
    parameters: {weight: 1.0}
  - model: ft
    parameters: {weight: 3.0}
""")
    assert [i.is_base for i in rec.inputs] == [True, False] and rec.vectors == [Ref("ft")]
    base = Memory({"w": torch.tensor([1.0, 1.0])})
    merged = dict(materialize(Merger(rec, base, [Memory({"w": torch.tensor([4.0, -4.0])})]), workers=1))
    assert merged["w"].tolist() == [4.0, -2.0]  # (1*base + 3*(base + tau)) / 4


def test_mergekit_missing_weight_is_reported_per_tensor() -> None:
    rec = load_recipe("merge_method: ties\nbase_model: b\nmodels:\n  - model: a\n    parameters: {density: 0.5}\n")
    with pytest.raises(UsageError, match="no 'weight' of input a applies to tensor 'lm_head.weight'"):
        rec.resolve(NAMES).plan("lm_head.weight")


@pytest.mark.parametrize(
    "recipe, message",
    [
        ("method: tie\ninputs: [a]", "unknown merge method 'tie'"),
        ("inputs: [a]", "missing 'method'"),
        ("method: ties\ninputs: []", "recipe.inputs"),
        ("method: ties\ninputs: [org/model]", r"recipe.inputs\[0\]: invalid reference"),
        ("method: ties\ninputs: [{weight: 1}]", r"recipe.inputs\[0\].ref: missing"),
        ("method: ties\ninputs: [a]\nparams: {densty: 0.5}", "params.densty: unknown parameter"),
        ("method: ties\ninputs: [{ref: a, lambda: 2}]", r"inputs\[0\] \(a\).lambda: 'lambda' applies to the whole"),
        ("method: ties\ninputs: [a]\nparams: {density: [0.1, x]}", r"params.density\[1\]: expected float"),
        ("method: ties\ninputs: [a]\nparams: {density: [{filter: mlp}]}", r"params.density\[0\]: a conditional"),
        ("method: ties\ninputs: [a]\nparams: {normalize: 1}", "params.normalize: expected bool"),
        ("method: ties\ninputs: [a]\nparams: {consensus: most}", "params.consensus: 'most' is not one of"),
        ("method: ties\ninputs: [a]\ndtype: fp8", "unknown dtype 'fp8'"),
        ("method: ties\ninputs: [a]\nextra_tensors: keep", "recipe.extra_tensors"),
        ("method: ties\ninputs: [a]\nbasis: b", "recipe.basis: unknown field"),
        ("merge_method: ties\nslices: []", "recipe.slices: mergekit slices/modules"),
        ("merge_method: ties\nbase_model: b\nmodels: [{model: b}]", "no model other than the base"),
        ("merge_method: ties\nmodels: [{model: a, params: {}}]", r"models\[0\].params: unknown field"),
        ("merge_method: ties\nmodels: [{model: ../a}]", r"recipe.models\[0\].model: invalid reference"),
        ("method: [ties", "not valid YAML"),
        ("- a\n- b", "mapping at the top level"),
    ],
)
def test_malformed_recipes_name_the_field(recipe: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        load_recipe(recipe)


def test_recipe_file(tmp_path) -> None:
    path = tmp_path / "r.yml"
    path.write_text(NATIVE)
    assert load_recipe(str(path)).vectors == load_recipe(path).vectors == load_recipe(NATIVE).vectors
    with pytest.raises(UsageError, match="cannot read recipe"):
        load_recipe(str(tmp_path / "missing.yml"))


# ---- engine rules ------------------------------------------------------------------------------


class Memory:
    """An in-memory TensorSource that counts reads."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors, self.reads = tensors, 0

    def names(self) -> list[str]:
        return list(self.tensors)

    def info(self, name: str):
        return self.tensors[name].dtype, tuple(self.tensors[name].shape)

    def get(self, name: str) -> torch.Tensor:
        self.reads += 1
        return self.tensors[name]


def test_extra_tensor_policies() -> None:
    base = Memory({"w": torch.ones(2), "ids": torch.arange(3)})
    a = Memory({"w": torch.ones(2), "ids": torch.zeros(3, dtype=torch.int64), "head": torch.tensor([2.0, 4.0])})
    b = Memory({"w": torch.ones(2)})
    ta = load_recipe({"method": "task_arithmetic", "inputs": [{"ref": "a", "weight": 0.5}, "b"]})
    merged = dict(materialize(Merger(ta, base, [a, b])))
    assert list(merged) == ["w", "ids", "head"]
    assert merged["w"].tolist() == [2.5, 2.5] and torch.equal(merged["ids"], torch.arange(3))
    assert merged["head"].tolist() == [1.0, 2.0]  # base taken as zeros: weight x tensor
    ties = {"method": "ties", "inputs": [{"ref": "a", "weight": 0.5}, "b"], "params": {"density": 0.5}}
    with pytest.raises(UsageError, match="tensor 'head' is not in the base"):
        Merger(load_recipe(ties), base, [a, b]).get("head")
    copied = Merger(load_recipe({**ties, "extra_tensors": "copy"}), base, [a, b])
    assert copied.get("head").tolist() == [2.0, 4.0]


def test_missing_input_tensor_is_zero_tau_and_shapes_are_checked() -> None:
    base = Memory({"w": torch.ones(2)})
    rec = load_recipe({"method": "task_arithmetic", "inputs": ["a", "b"]})
    assert Merger(rec, base, [Memory({}), Memory({"w": torch.ones(2)})]).get("w").tolist() == [2.0, 2.0]
    from tvstore.errors import TvstoreError

    with pytest.raises(TvstoreError, match=r"input a: tensor 'w' has shape \(3,\), base has \(2,\)"):
        Merger(rec, base, [Memory({"w": torch.ones(3)}), Memory({})]).get("w")
    with pytest.raises(UsageError, match="needs 2 input sources"):
        Merger(rec, base, [Memory({})])


def test_output_dtype_and_lazy_mapping() -> None:
    base = Memory({"w": torch.ones(2, dtype=torch.float16), "v": torch.zeros(3)})
    tau = Memory({"w": torch.full((2,), 0.5, dtype=torch.float16), "v": torch.ones(3)})
    rec = load_recipe({"method": "task_arithmetic", "inputs": ["a"]})
    merger = Merger(rec, base, [tau])
    assert [i.dtype for i in merger.infos()] == [torch.float16, torch.float32]
    lazy = LazyMerged(merger)
    assert len(lazy) == 2 and list(lazy) == ["w", "v"] and "w" in lazy and "x" not in lazy
    assert base.reads == 0  # nothing computed until accessed
    w = lazy["w"]
    assert w.dtype == torch.float16 and w.tolist() == [1.5, 1.5]
    assert base.reads == 1
    with pytest.raises(KeyError):
        lazy["x"]
    bf = Merger(load_recipe({"method": "task_arithmetic", "inputs": ["a"], "dtype": "bf16"}), base, [tau])
    assert {t.dtype for _, t in materialize(bf)} == {torch.bfloat16}


def test_materialize_bounded_lookahead_and_order() -> None:
    n = 40
    base = Memory({f"t{i}": torch.full((4,), float(i)) for i in range(n)})
    taus = Memory({f"t{i}": torch.ones(4) for i in range(n)})
    merger = Merger(load_recipe({"method": "task_arithmetic", "inputs": ["a"]}), base, [taus])
    it = materialize(merger, workers=2, lookahead=1)
    name, t = next(it)
    assert name == "t0" and t.tolist() == [1.0] * 4
    assert base.reads <= 4  # workers + lookahead (+1 being submitted), not the whole model
    rest = list(it)
    assert [n_ for n_, _ in rest] == [f"t{i}" for i in range(1, n)]
    assert all(t[0].item() == i + 2 for i, (_, t) in enumerate(rest))


def test_random_methods_are_thread_order_independent() -> None:
    base = Memory({f"layers.{i}.w": torch.zeros(256) for i in range(12)})
    taus = [Memory({n: torch.randn(256, generator=torch.Generator().manual_seed(i)) for n in base.tensors})
            for i in range(2)]
    for method in ("dare_ties", "della"):
        rec = load_recipe({"method": method, "inputs": ["a", "b"], "params": {"density": 0.4, "seed": 3}})
        serial = dict(materialize(Merger(rec, base, taus), workers=1))
        threaded = dict(materialize(Merger(rec, base, taus), workers=2, lookahead=4))
        reversed_ = {n: Merger(rec, base, taus).get(n) for n in reversed(list(base.tensors))}
        for n in serial:
            assert torch.equal(serial[n], threaded[n]) and torch.equal(serial[n], reversed_[n])
        other = dict(materialize(Merger(load_recipe({**rec.raw, "params": {"density": 0.4, "seed": 4}}), base, taus)))
        assert not torch.equal(serial["layers.0.w"], other["layers.0.w"])


def _recording_method(monkeypatch, result_of) -> list[int]:
    """task_arithmetic's spec with its function replaced: records where each input buffer lives."""
    from tvstore.merge import methods

    seen: list[int] = []

    def fn(taus, weights, params, *, name, base):
        seen.append(taus.data_ptr())
        return result_of(taus)

    spec = replace(methods.METHODS["task_arithmetic"], combine=fn, prepare=None)
    monkeypatch.setitem(methods.METHODS, "task_arithmetic", spec)
    return seen


def test_the_input_buffer_is_reused_from_one_tensor_to_the_next(monkeypatch) -> None:
    seen = _recording_method(monkeypatch, lambda taus: taus.sum(dim=0))
    base = Memory({"a": torch.zeros(6), "b": torch.zeros(2, 3)})
    taus = Memory({"a": torch.ones(6), "b": torch.full((2, 3), 2.0)})
    merger = Merger(load_recipe({"method": "task_arithmetic", "inputs": ["x"]}), base, [taus])
    first, second = merger.get("a"), merger.get("b")
    assert first.tolist() == [1.0] * 6 and second.tolist() == [[2.0] * 3] * 2
    assert seen[0] == seen[1]  # the second tensor's inputs went into the first one's buffer


def test_a_result_living_in_the_input_buffer_is_never_overwritten(monkeypatch) -> None:
    seen = _recording_method(monkeypatch, lambda taus: taus[0])  # the result is a view of the buffer
    base = Memory({"a": torch.zeros(4), "b": torch.zeros(4)})
    taus = Memory({"a": torch.ones(4), "b": torch.full((4,), 2.0)})
    merger = Merger(load_recipe({"method": "task_arithmetic", "inputs": ["x"]}), base, [taus])
    first, second = merger.get("a"), merger.get("b")
    assert first.tolist() == [1.0] * 4 and second.tolist() == [2.0] * 4
    assert seen[0] != seen[1]


def _overlap_recording(monkeypatch) -> list[tuple[str, ...]]:
    """task_arithmetic whose combine step records which tensors are being combined at the same moment."""
    import threading
    import time

    from tvstore.merge import methods

    running: set[str] = set()
    lock = threading.Lock()
    seen: list[tuple[str, ...]] = []
    combine = methods.METHODS["task_arithmetic"].combine

    def fn(taus, weights, params, *, name, base):
        with lock:
            running.add(name)
            seen.append(tuple(sorted(running)))
        time.sleep(0.02)  # long enough for a tensor admitted beside this one to get here too
        with lock:
            running.discard(name)
        return combine(taus, weights, params, name=name, base=base)

    monkeypatch.setitem(methods.METHODS, "task_arithmetic", replace(methods.METHODS["task_arithmetic"], combine=fn))
    return seen


def test_materialize_runs_the_largest_tensor_alone_within_the_bound(monkeypatch) -> None:
    seen = _overlap_recording(monkeypatch)
    shapes = {"embed": (64, 16), **{f"small{i}": (16,) for i in range(8)}, "head": (64, 16)}
    base = Memory({n: torch.zeros(s) for n, s in shapes.items()})
    inputs = [Memory({n: torch.full(s, float(k + 1)) for n, s in shapes.items()}) for k in range(2)]
    merger = Merger(load_recipe({"method": "task_arithmetic", "inputs": ["a", "b"]}), base, inputs)
    assert merger.bound_bytes() == (2 + 2) * 64 * 16 * 4  # (inputs + 2) x the largest tensor, fp32
    assert merger.working_bytes("small0") == (2 + 2) * 16 * 4
    merged = list(materialize(merger, workers=2, lookahead=2))
    assert [n for n, _ in merged] == list(shapes)
    assert all(torch.equal(t, torch.full(shapes[n], 3.0)) for n, t in merged)
    assert ("embed",) in seen and ("head",) in seen
    assert not any(len(group) > 1 and ("embed" in group or "head" in group) for group in seen)
    assert any(len(group) > 1 for group in seen)  # the small ones do run side by side


def test_spares_hand_out_the_smallest_fit_and_stay_within_what_they_may_keep() -> None:
    from tvstore.merge.materialize import Spares

    spares = Spares()
    small, large = torch.empty(10).untyped_storage(), torch.empty(100).untyped_storage()
    spares.give(large, keep=400)
    spares.give(small, keep=400)  # 40 more bytes than it may keep: dropped
    assert spares.idle_bytes() == 400
    spares.give(small, keep=440)
    assert spares.take(8, at_most=39) is None  # only a buffer that is not much larger than the need
    assert spares.take(8) is small  # the smallest that fits, not the first
    assert spares.take(1000) is None and spares.idle_bytes() == 400
    spares.give(small, keep=440)
    spares.shrink(40)  # largest first
    assert spares.idle_bytes() == 40 and spares.take(40) is small


def test_the_largest_tensors_idle_buffer_does_not_serialize_the_next_ones(monkeypatch) -> None:
    seen = _overlap_recording(monkeypatch)
    shapes = {"embed": (64, 16), **{f"mid{i}": (20, 20) for i in range(6)}}
    base = Memory({n: torch.zeros(s) for n, s in shapes.items()})
    inputs = [Memory({n: torch.full(s, float(k + 1)) for n, s in shapes.items()}) for k in range(2)]
    merger = Merger(load_recipe({"method": "task_arithmetic", "inputs": ["a", "b"]}), base, inputs)
    # a mid tensor taking the embedding's 8 KiB stacking buffer would count 11.2 KiB of the 16 KiB bound,
    # and no second one (6.4 KiB) would fit beside it
    assert merger.working_bytes("mid0") == (2 + 2) * 400 * 4 and merger.bound_bytes() == 16384
    assert all(torch.equal(t, torch.full(shapes[n], 3.0)) for n, t in materialize(merger, workers=2, lookahead=2))
    assert any(len(group) > 1 for group in seen)
