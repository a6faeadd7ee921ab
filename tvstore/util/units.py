"""What people type on a command line: sizes (``500MB``), durations (``1h``), ``key=value`` metadata.

One parser per grammar: every size a user gives (``--shard-size``,
``TVSTORE_S3_PART_SIZE``, ``TVSTORE_CACHE_MAX_BYTES``, ...) goes through
:func:`parse_size`, so ``64M``, ``64MB`` and ``64MiB`` mean the same
everywhere (units are binary: K = 1024).
"""

from __future__ import annotations

import math
import re

from tvstore.errors import UsageError

DEFAULT_SHARD_BYTES = 5 * 1024**3  # Hugging Face's own default shard size

_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([KMGT]?)(?:I?B)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
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
    if not math.isfinite(value):
        raise UsageError(f"bad {what} {text!r}: use e.g. {example}")
    if value < 0:
        raise UsageError(f"{what} must not be negative, got {text!r}")
    return value


def parse_size(text: str, *, minimum: int = 1) -> int:
    """Bytes from ``"500MB"``, ``"64M"``, ``"5GiB"``, ``"1.5G"`` or ``"1024"``; at least ``minimum``."""
    m = _SIZE.fullmatch(text.strip())
    if m is None:
        raise UsageError(f"bad size {text!r}: use bytes or a K/M/G/T suffix, e.g. 64M or 5GB")
    value = int(float(m[1]) * _SIZE_UNITS[m[2].upper()])
    if value < minimum:
        raise UsageError(f"size must be at least {minimum} byte{'s' if minimum != 1 else ''}, got {text!r}")
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
