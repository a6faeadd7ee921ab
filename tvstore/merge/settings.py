"""Parameter settings that vary by tensor: name filters and layer gradients.

A setting is what a recipe writes for one parameter, with mergekit's grammar:

- a scalar (``0.5``, ``true``, ``"sum"``);
- a gradient, a list of scalars (``[0, 0.5, 1]``) interpolated over the layer
  position t in [0, 1] (numbers interpolate linearly; booleans and strings
  pick the entry at ``int(t * (n - 1))``);
- conditionals, ``{filter: SUBSTRING, value: SETTING}`` or a list of them: the
  first whose filter is a substring of the tensor name (or is absent / ``*``)
  wins; if none matches the setting is unset and a lower-precedence one applies.

Settings are checked once when a recipe is loaded (``check_setting``) so a
typo surfaces before any tensor is read, and evaluated per tensor later.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tvstore.errors import UsageError
from tvstore.merge.methods import Param


def coerce(value: Any, param: Param, where: str) -> Any:
    """Check one scalar against its parameter's type and range; return it in that type."""
    if param.choices is not None:
        if isinstance(value, (bool, str)) and value in param.choices:
            return value
        raise UsageError(f"{where}: {value!r} is not one of {', '.join(map(str, param.choices))}")
    if param.kind is bool:
        if isinstance(value, bool):
            return value
    elif param.kind in (int, float) and not isinstance(value, bool):
        number = _number(value)
        if number is not None and (param.kind is float or float(number).is_integer()):
            return _in_range(param.kind(number), param, where)
    raise UsageError(f"{where}: expected {param.kind.__name__}, got {value!r}")


def _in_range(value: int | float, param: Param, where: str) -> int | float:
    if param.bounds is not None and not param.bounds.contains(value):
        raise UsageError(f"{where}: must be {param.bounds.describe()}, got {value!r}")
    return value


def _number(value: Any) -> float | None:
    """Numbers, and numeric strings (YAML reads ``1e-3`` as a string)."""
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (bool, int, float, str))


def check_setting(setting: Any, param: Param, where: str) -> None:
    """Raise ``UsageError`` naming ``where`` unless ``setting`` is well formed for ``param``."""
    if _is_scalar(setting):
        coerce(setting, param, where)
    elif isinstance(setting, Mapping):
        _check_conditional(setting, param, where)
    elif isinstance(setting, list) and setting:
        if all(_is_scalar(e) for e in setting):
            for i, e in enumerate(setting):
                coerce(e, param, f"{where}[{i}]")
        elif all(isinstance(e, Mapping) for e in setting):
            for i, e in enumerate(setting):
                _check_conditional(e, param, f"{where}[{i}]")
        else:
            raise UsageError(f"{where}: a list must be all values (a gradient) or all {{filter, value}} entries")
    else:
        raise UsageError(f"{where}: expected a value, a gradient list or filter/value entries, got {setting!r}")


def _check_conditional(entry: Mapping[str, Any], param: Param, where: str) -> None:
    extra = set(entry) - {"filter", "value"}
    if extra or "value" not in entry:
        raise UsageError(f"{where}: a conditional needs 'value' and an optional 'filter' only")
    if entry.get("filter") is not None and not isinstance(entry["filter"], str):
        raise UsageError(f"{where}.filter: expected a string, got {entry['filter']!r}")
    value = entry["value"]
    if not (_is_scalar(value) or (isinstance(value, list) and value and all(_is_scalar(e) for e in value))):
        raise UsageError(f"{where}.value: expected a value or a gradient list, got {value!r}")
    check_setting(value, param, f"{where}.value")


def evaluate(setting: Any, param: Param, tensor: str, t: float) -> Any:
    """The value of a checked setting for ``tensor`` at layer position ``t``; None if no filter matches."""
    if _is_scalar(setting):
        return coerce(setting, param, tensor)
    if isinstance(setting, Mapping):
        setting = [setting]
    if all(_is_scalar(e) for e in setting):
        return _gradient([coerce(e, param, tensor) for e in setting], param, t)
    for cond in setting:
        f = cond.get("filter")
        if f is None or f == "*" or f in tensor:
            return evaluate(cond["value"], param, tensor, t)
    return None


def _gradient(values: list[Any], param: Param, t: float) -> Any:
    if param.kind not in (int, float) or param.choices is not None:
        return values[int(t * (len(values) - 1))]
    scaled = t * (len(values) - 1)
    i0 = int(scaled)
    i1 = min(len(values) - 1, i0 + 1)
    frac = scaled - i0
    return param.kind((1 - frac) * values[i0] + frac * values[i1])
