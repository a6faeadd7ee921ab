"""Where the blob cache lives and how big it may grow, from the environment.

``TVSTORE_CACHE_DIR`` (default ``$XDG_CACHE_HOME/tvstore`` or
``~/.cache/tvstore``; ``off`` disables caching) and
``TVSTORE_CACHE_MAX_BYTES`` (an integer, or with a K/M/G/T suffix, binary).
"""

from __future__ import annotations

import os
from pathlib import Path

from tvstore.errors import UsageError

DEFAULT_MAX_BYTES = 10 * 1024**3
DISABLED = frozenset({"off", "none", "no", "false", "0"})
_SUFFIXES = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(text: str) -> int:
    """``"512M"`` -> 536870912; plain integers are bytes."""
    raw = text.strip().upper().removesuffix("IB").removesuffix("B")
    number, suffix = (raw[:-1], raw[-1]) if raw and raw[-1] in _SUFFIXES else (raw, "")
    try:
        value = int(float(number) * _SUFFIXES[suffix])
    except ValueError:
        raise UsageError(f"not a size: {text!r} (use bytes, or a K/M/G/T suffix)") from None
    if value < 0:
        raise UsageError(f"a size cannot be negative: {text!r}")
    return value


def default_cache_dir() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "tvstore"


def cache_settings() -> tuple[Path | None, int]:
    """``(cache dir or None when disabled, max bytes)`` from the environment."""
    raw_dir = os.environ.get("TVSTORE_CACHE_DIR", "").strip()
    raw_max = os.environ.get("TVSTORE_CACHE_MAX_BYTES", "").strip()
    max_bytes = parse_size(raw_max) if raw_max else DEFAULT_MAX_BYTES
    if raw_dir.lower() in DISABLED:
        return None, max_bytes
    return (Path(raw_dir).expanduser() if raw_dir else default_cache_dir()), max_bytes
