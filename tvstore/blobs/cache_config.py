"""Where the blob cache lives and how big it may grow, from the environment.

``TVSTORE_CACHE_DIR`` (default ``$XDG_CACHE_HOME/tvstore`` or
``~/.cache/tvstore``; ``off`` disables caching) and
``TVSTORE_CACHE_MAX_BYTES`` (a size, :func:`tvstore.util.units.parse_size`).
"""

from __future__ import annotations

import os
from pathlib import Path

from tvstore.errors import UsageError
from tvstore.util.units import parse_size

DEFAULT_MAX_BYTES = 10 * 1024**3
DISABLED = frozenset({"off", "none", "no", "false", "0"})


def default_cache_dir() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "tvstore"


def cache_settings() -> tuple[Path | None, int]:
    """``(cache dir or None when disabled, max bytes)`` from the environment."""
    raw_dir = os.environ.get("TVSTORE_CACHE_DIR", "").strip()
    raw_max = os.environ.get("TVSTORE_CACHE_MAX_BYTES", "").strip()
    try:
        max_bytes = parse_size(raw_max, minimum=0) if raw_max else DEFAULT_MAX_BYTES
    except UsageError as exc:
        raise UsageError(f"TVSTORE_CACHE_MAX_BYTES: {exc}") from None
    if raw_dir.lower() in DISABLED:
        return None, max_bytes
    return (Path(raw_dir).expanduser() if raw_dir else default_cache_dir()), max_bytes
