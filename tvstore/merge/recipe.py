"""Merge recipes: which vectors, which method, which parameters for which tensor.

Two spellings are accepted (YAML text, a file, or an already-parsed mapping).

tvstore's own::

    base: llama-7b                # optional: the registry can infer it from the inputs
    method: ties
    inputs:
      - ref: math@3               # NAME, NAME@VERSION or NAME:TAG
        weight: 0.7               # defaults to 1.0
        density: [0.3, 0.6]       # any per-input parameter, with filters/gradients
      - code:stable               # a bare reference: weight 1.0
    params: {lambda: 1.0, normalize: true}
    dtype: bf16                   # output dtype; default: the base's dtype
    extra_tensors: refuse         # see ``recipe_schema.EXTRA_POLICIES``; or {from: REF}

mergekit's (``merge_method``, ``base_model``, ``models: [{model, parameters}]``,
``parameters``, ``dtype``/``out_dtype``), for the methods both tools have, with
``model:`` entries naming registry vectors. As in mergekit, an entry naming the
base model is the base itself: ignored by the task-arithmetic family, a zero
task vector for ``linear``. ``slices``/``modules`` are refused; tokenizer options
are ignored (the base's tokenizer is copied).

A ``Recipe`` is resolved against the base's tensor names; the result answers,
per tensor, the per-input weights and the method's parameters (``TensorPlan``).
The layer position t used by gradients is layer_index / (num_layers - 1) for
tensors inside a numbered block (``layers.N``, ``layer.N``, ``h.N``,
``blocks.N``) and 0 elsewhere, as mergekit does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from tvstore.checkpoint.dtypes import dtype_from_name
from tvstore.errors import UsageError
from tvstore.merge import recipe_schema as schema
from tvstore.merge import settings
from tvstore.merge.methods import REQUIRED, MethodSpec, get_method
from tvstore.util.refs import Ref, parse_ref

_DEFAULT_EXTRA = {"task_arithmetic": "merge", "linear": "merge"}
_MERGEKIT_REFUSED = {"slices", "modules"}
_LAYER = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)(?:\.|$)")


@dataclass(frozen=True)
class RecipeInput:
    """One input of a merge: a registry vector (or the base itself) and its own settings."""

    ref: Ref
    settings: Mapping[str, Any] = field(default_factory=dict)
    is_base: bool = False


@dataclass(frozen=True)
class TensorPlan:
    """What the method needs for one tensor: per-input weights and resolved parameters."""

    weights: tuple[float, ...]
    params: dict[str, Any]


@dataclass(frozen=True)
class Recipe:
    """A validated recipe, not yet tied to a model's tensor names."""

    method: MethodSpec
    base: Ref | None
    inputs: tuple[RecipeInput, ...]
    settings: Mapping[str, Any]
    dtype: torch.dtype | None = None
    extra_tensors: str | Ref = "refuse"  # a policy word, or the input whose extra tensors are taken
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def vectors(self) -> list[Ref]:
        """The registry vectors to open, in input order (the base-as-input entry excluded)."""
        return [i.ref for i in self.inputs if not i.is_base]

    def with_base(self, base: Ref) -> Recipe:
        """This recipe with its base filled in (the registry infers it from the inputs)."""
        if self.base is not None and self.base != base:
            raise UsageError(f"recipe base {self.base} differs from {base}")
        return Recipe(self.method, base, self.inputs, self.settings, self.dtype, self.extra_tensors, self.raw)

    def resolve(self, names: Sequence[str]) -> ResolvedRecipe:
        """Bind to the base's tensor names, which fix the layer count for gradients."""
        return ResolvedRecipe(self, layer_count(names))


class ResolvedRecipe:
    """A recipe bound to a model: answers ``plan(tensor_name)``."""

    def __init__(self, recipe: Recipe, num_layers: int) -> None:
        self.recipe = recipe
        self.num_layers = num_layers

    def position(self, name: str) -> float:
        """Layer position t in [0, 1]: index / (num_layers - 1); 1 for one layer; 0 outside blocks."""
        index = layer_index(name)
        if index is None:
            return 0.0
        return index / (self.num_layers - 1) if self.num_layers > 1 else 1.0

    def plan(self, name: str) -> TensorPlan:
        """Weights and parameters for tensor ``name``, highest-precedence setting first."""
        t = self.position(name)
        spec = self.recipe.method
        shared = {k: self._value(k, p, name, t, ()) for k, p in spec.params.items() if not p.per_input}
        per_input = {
            k: [self._value(k, p, name, t, (i,)) for i in self.recipe.inputs]
            for k, p in spec.params.items()
            if p.per_input
        }
        weights = tuple(per_input.pop("weight"))
        return TensorPlan(weights, {**shared, **per_input})

    def _value(self, key: str, param: Any, name: str, t: float, scopes: tuple[RecipeInput, ...]) -> Any:
        for scope in (*[s.settings for s in scopes], self.recipe.settings):
            if key in scope:
                value = settings.evaluate(scope[key], param, name, t)
                if value is not None:
                    return value
        if param.default is REQUIRED:
            who = f" of input {scopes[0].ref}" if scopes else ""
            raise UsageError(f"no {key!r}{who} applies to tensor {name!r}")
        return param.default


def layer_index(name: str) -> int | None:
    """The block number in a tensor name (``model.layers.3.mlp`` -> 3), if any."""
    m = _LAYER.search(name)
    return int(m.group(1)) if m else None


def layer_count(names: Sequence[str]) -> int:
    """Number of numbered blocks among ``names`` (highest index + 1)."""
    return max((i for i in map(layer_index, names) if i is not None), default=-1) + 1


# ---- loading ----------------------------------------------------------------------------------


def load_recipe(source: str | Path | Mapping[str, Any]) -> Recipe:
    """Parse a recipe from YAML text, a YAML file path, or a mapping; ``UsageError`` if malformed."""
    data = _read(source)
    if "merge_method" in data:
        return _from_mergekit(data)
    if "method" in data:
        return _from_native(data)
    raise UsageError("recipe: missing 'method' (or mergekit's 'merge_method')")


def recipe_mapping(source: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """A valid recipe as its plain mapping, for callers that edit recipes (parameter search)."""
    data = _read(source)
    load_recipe(data)  # a malformed recipe is refused before anyone edits it
    return dict(data)


def _read(source: str | Path | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(source, Mapping):
        return source
    text = source
    if isinstance(source, Path) or ("\n" not in source and (source.endswith((".yml", ".yaml")) or Path(source).is_file())):
        try:
            text = Path(source).read_text(encoding="utf-8")
        except OSError as e:
            raise UsageError(f"cannot read recipe {source}: {e.strerror}") from None
        except UnicodeDecodeError:
            raise UsageError(f"recipe {source} is not UTF-8 text") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UsageError(f"recipe is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, Mapping):
        raise UsageError("recipe: expected a mapping at the top level")
    return data


def _from_native(data: Mapping[str, Any]) -> Recipe:
    spec = schema.validate(schema.NativeRecipe, data)
    method = get_method(spec.method)
    base = _ref(spec.base, "base") if spec.base is not None else None
    inputs = tuple(RecipeInput(_ref(e.ref, f"inputs[{i}]"), e.settings()) for i, e in enumerate(spec.inputs))
    top = {"weight": 1.0, **spec.params}
    return _build(method, base, inputs, top, spec.dtype, _extra_policy(spec.extra_tensors), data)


def _extra_policy(value: str | schema.FromRef | None) -> str | Ref | None:
    """A validated ``extra_tensors`` value: the policy word, or ``{from: REF}`` as that ``Ref``."""
    return _ref(value.from_, "extra_tensors.from") if isinstance(value, schema.FromRef) else value


def parse_extra_tensors(text: str) -> str | Ref:
    """``--extra-tensors``: a policy word or ``from:REF``, checked like the recipe key."""
    word, colon, ref = text.partition(":")
    return _extra_policy(schema.validate_extra({"from": ref} if colon and word == "from" else text, "--extra-tensors"))


def _from_mergekit(data: Mapping[str, Any]) -> Recipe:
    refused = _MERGEKIT_REFUSED & set(data)
    if refused:
        raise UsageError(f"recipe.{sorted(refused)[0]}: mergekit slices/modules are not supported; use 'models'")
    spec = schema.validate(schema.MergekitRecipe, data)
    method = get_method(spec.merge_method)
    base = _ref(spec.base_model, "base_model") if spec.base_model is not None else None
    inputs = []
    for i, entry in enumerate(spec.models):
        ref = _ref(entry.model, f"models[{i}].model")
        is_base = ref == base
        if is_base and not method.base_as_input:
            continue  # the task-arithmetic family takes the base separately, as mergekit does
        inputs.append(RecipeInput(ref, entry.parameters, is_base))
    if not inputs:
        raise UsageError("recipe.models: no model other than the base")
    return _build(method, base, tuple(inputs), spec.parameters, spec.out_dtype or spec.dtype, None, data)


def _build(method: MethodSpec, base: Ref | None, inputs: tuple[RecipeInput, ...], top: Mapping[str, Any],
           dtype: Any, extra: Any, raw: Mapping[str, Any]) -> Recipe:
    if base is None and any(i.is_base for i in inputs):
        raise UsageError("recipe: an input names the base but no base is given")
    _check_settings(method, top, "params", shared_ok=True)
    for i, inp in enumerate(inputs):
        _check_settings(method, inp.settings, f"inputs[{i}] ({inp.ref})", shared_ok=False)
    extra = extra if extra is not None else _DEFAULT_EXTRA.get(method.name, "refuse")
    out_dtype = dtype_from_name(dtype) if dtype is not None else None
    return Recipe(method, base, inputs, dict(top), out_dtype, extra, dict(raw))


def _check_settings(method: MethodSpec, scope: Mapping[str, Any], where: str, *, shared_ok: bool) -> None:
    for key, setting in scope.items():
        param = method.params.get(key)
        if param is None:
            raise UsageError(f"{where}.{key}: unknown parameter for method {method.name!r}; "
                             f"known: {', '.join(sorted(method.params))}")
        if not shared_ok and not param.per_input:
            raise UsageError(f"{where}.{key}: {key!r} applies to the whole merge; set it under top-level parameters")
        settings.check_setting(setting, param, f"{where}.{key}")


def _ref(text: Any, where: str) -> Ref:
    try:
        return parse_ref(text)
    except UsageError as e:
        raise UsageError(f"recipe.{where}: {e}") from None
