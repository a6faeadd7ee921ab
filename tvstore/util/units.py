"""What people type on a command line: sizes (``500MB``), durations (``1h``), ``key=value`` metadata."""

from __future__ import annotations

from tvstore.errors import UsageError

DEFAULT_SHARD_BYTES = 5 * 1024**3  # Hugging Face's own default shard size

_SIZES = {"KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4, "B": 1}
_DURATIONS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def _number_with_unit(text: str, units: dict[str, int], what: str, example: str) -> float:
    t = text.strip()
    factor = 1
    for unit, mult in units.items():
        if t.upper().endswith(unit.upper()):
            t, factor = t[: -len(unit)], mult
            break
    try:
        value = float(t) * factor
    except ValueError:
        raise UsageError(f"bad {what} {text!r}: use e.g. {example}") from None
    if value < 0:
        raise UsageError(f"{what} must not be negative, got {text!r}")
    return value


def parse_size(text: str) -> int:
    """Bytes from ``"500MB"``, ``"5GB"`` or ``"1024"``; must be positive."""
    value = int(_number_with_unit(text, _SIZES, "size", "500MB or 5GB"))
    if value <= 0:
        raise UsageError(f"size must be positive, got {text!r}")
    return value


def parse_duration(text: str) -> float:
    """Seconds from ``"90s"``, ``"30m"``, ``"1h"``, ``"2d"`` or ``"0"``."""
    return _number_with_unit(text, _DURATIONS, "duration", "30m, 1h or 0")


def parse_meta(items: list[str]) -> dict[str, str]:
    """``["task=sst2", "lr=2e-5"]`` to a dict; a usage error names a malformed item."""
    meta = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise UsageError(f"bad --meta {item!r}: expected key=value")
        meta[key.strip()] = value
    return meta
