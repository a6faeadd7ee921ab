"""The shape of a recipe file, as pydantic models (mergekit checks its YAML the same way).

Two spellings, one model each: tvstore's own (:class:`NativeRecipe`) and
mergekit's (:class:`MergekitRecipe`). The models check structure and types
only: which fields exist, which are lists, strings or mappings. What a
parameter's value may be (a scalar, a layer gradient, filter/value entries,
and its range) is the merge-settings grammar of :mod:`tvstore.merge.settings`,
checked against the method's declared parameters once the method is known.

Any validation failure becomes one ``UsageError`` line naming the field
(``recipe.inputs[0].ref: ...``). To add a field, add it to the model; a
field with several forms is a union of models (e.g. an ``extra_tensors``
that is a policy word or a ``{from: REF}`` mapping: ``Literal[...] | FromRef``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, StrictStr, TypeAdapter, ValidationError, field_validator

from tvstore.errors import UsageError

#: what to do with a tensor that some inputs have and the base lacks (e.g. a new head):
#: ``merge``: treat the base as zeros and merge the inputs that have it;
#: ``copy``: take it verbatim from the single input that has it;
#: ``refuse``: raise ``UsageError``;
#: ``drop``: leave them out of the output (each task keeps its own head elsewhere);
#: or ``{from: REF}`` (:class:`FromRef`): take them from that one input, leave the others'.
ExtraPolicy = Literal["merge", "copy", "refuse", "drop"]
EXTRA_POLICIES: tuple[str, ...] = get_args(ExtraPolicy)

#: a parameter setting; its grammar is checked by :func:`tvstore.merge.settings.check_setting`
Setting = Any


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FromRef(_Strict):
    """``extra_tensors: {from: REF}``: the tensors the base lacks, taken from one named input."""

    from_: StrictStr = Field(alias="from")


def validate_extra(value: Any, where: str = "recipe.extra_tensors") -> str | FromRef:
    """An ``extra_tensors`` value (in a recipe, or ``--extra-tensors``), or one line naming the choices."""
    try:
        return TypeAdapter(ExtraPolicy | FromRef).validate_python(value)
    except ValidationError:
        raise UsageError(f"{where}: expected one of {', '.join(EXTRA_POLICIES)} or {{from: REF}}, got {value!r}") from None


class NativeInput(_Strict):
    """``{ref: NAME@V, weight: 0.7, density: [0.3, 0.6], params: {...}}``: parameters inline or under ``params``."""

    model_config = ConfigDict(extra="allow", frozen=True)

    ref: StrictStr
    params: dict[StrictStr, Setting] = Field(default_factory=dict)

    def settings(self) -> dict[str, Setting]:
        """Inline parameters, then those under ``params`` (which win)."""
        return {**(self.model_extra or {}), **self.params}


class NativeRecipe(_Strict):
    """tvstore's recipe format."""

    method: StrictStr
    base: StrictStr | None = None
    inputs: list[NativeInput] = Field(min_length=1)
    params: dict[StrictStr, Setting] = Field(default_factory=dict)
    dtype: StrictStr | None = None
    extra_tensors: ExtraPolicy | FromRef | None = None

    @field_validator("inputs", mode="before")
    @classmethod
    def _bare_refs(cls, value: Any) -> Any:
        """A bare reference is an input of weight 1.0: ``- code:stable``."""
        return [{"ref": e} if isinstance(e, str) else e for e in value] if isinstance(value, list) else value

    @field_validator("extra_tensors", mode="before")
    @classmethod
    def _extra(cls, value: Any) -> Any:
        """One message naming every choice (a union's own errors name each branch)."""
        return value if value is None else validate_extra(value)


class MergekitModel(_Strict):
    """One entry of mergekit's ``models``."""

    model: StrictStr
    parameters: dict[StrictStr, Setting] = Field(default_factory=dict)


class MergekitRecipe(_Strict):
    """mergekit's format, for the methods both tools have (tokenizer options are accepted and ignored)."""

    merge_method: StrictStr
    base_model: StrictStr | None = None
    models: list[MergekitModel] = Field(min_length=1)
    parameters: dict[StrictStr, Setting] = Field(default_factory=dict)
    dtype: StrictStr | None = None
    out_dtype: StrictStr | None = None
    tokenizer_source: Any = None
    tokenizer: Any = None
    chat_template: Any = None
    name: Any = None


def validate(model: type[_Strict], data: Mapping[str, Any]) -> Any:
    """``model`` built from ``data``, or one ``UsageError`` line naming the first bad field."""
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise UsageError(_one_line(model, exc.errors()[0])) from None


def _one_line(model: type[_Strict], error: Mapping[str, Any]) -> str:
    loc = tuple(error["loc"])
    where = "recipe" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{where}: unknown field (known: {', '.join(_known_fields(model, loc))})"
    if kind == "missing":
        return f"{where}: missing"
    if kind == "too_short":
        return f"{where}: expected a non-empty list"
    if kind == "model_type":
        return f"{where}: expected a mapping, got {error['input']!r}"
    msg = error["msg"]
    return f"{where}: {msg[0].lower()}{msg[1:]}, got {error['input']!r}"


def _known_fields(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names of the model that holds ``loc``'s last part (for an unknown-field message)."""
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[part].annotation
        inner = [a for a in (annotation, *get_args(annotation)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not inner:
            return []
        model = inner[0]
    return sorted(model.model_fields)
