"""Parse registry references: ``NAME``, ``NAME@VERSION`` or ``NAME:TAG``.

One parser for every place a user names a stored vector (CLI arguments,
recipes), so the grammar and its error messages are the same everywhere.
Names are restricted to letters, digits and ``-_.`` so a reference can never
smuggle a path separator into a file path or a Hugging Face repo id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tvstore.errors import UsageError

_NAME = r"[A-Za-z0-9_.-]+"
LATEST = "latest"  # the implicit tag of every name's newest version
MAX_VERSION = 2**31 - 1  # versions are stored as 32-bit integers on every database
_REF = re.compile(rf"(?P<name>{_NAME})(?:@(?P<version>[0-9]+)|:(?P<tag>{_NAME}))?")


@dataclass(frozen=True)
class Ref:
    """A reference to a stored vector: by name, optionally pinned to a version or a tag."""

    name: str
    version: int | None = None
    tag: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return versioned(self.name, self.version)
        if self.tag is not None:
            return f"{self.name}:{self.tag}"
        return self.name


def versioned(name: str, version: int) -> str:
    """The exact reference ``NAME@VERSION``: how every message and record names one version."""
    return f"{name}@{version}"


def check_name(name: str, what: str = "name") -> str:
    """Return ``name`` if it is a valid registry name, else raise ``UsageError``."""
    if isinstance(name, str) and re.fullmatch(_NAME, name) and name not in (".", "..") and len(name) <= 200:
        return name
    raise UsageError(f"invalid {what} {name!r}: {_why_invalid(name)}; use letters, digits, '-', '_' and '.' only")


def _why_invalid(name: object) -> str:
    if not isinstance(name, str) or not name:
        return "it is empty"
    bad = next((c for c in name if not re.fullmatch(_NAME, c)), None)
    if bad in ("/", "\\"):
        return f"it contains the path separator {bad!r}"
    if bad is not None:
        return f"it contains {bad!r}"
    if len(name) > 200:
        return "it is longer than 200 characters"
    return "it is a relative path component"


def parse_ref(text: str) -> Ref:
    """Parse ``NAME``, ``NAME@VERSION`` (VERSION >= 1) or ``NAME:TAG``."""
    if not isinstance(text, str):
        raise UsageError(f"invalid reference {text!r}: expected NAME, NAME@VERSION or NAME:TAG")
    m = _REF.fullmatch(text.strip())
    if m is None or m["name"] in (".", ".."):
        raise UsageError(f"invalid reference {text!r}: expected NAME, NAME@VERSION or NAME:TAG")
    version = int(m["version"]) if m["version"] is not None else None
    if version is not None and not 1 <= version <= MAX_VERSION:
        raise UsageError(f"invalid reference {text!r}: versions run from 1 to {MAX_VERSION}")
    if m["tag"] is not None:
        check_tag(m["tag"])
    return Ref(m["name"], version, m["tag"])


def check_tag(tag: str) -> str:
    """A tag is a name that cannot be mistaken for a version (``good:2`` would read like ``good@2``)."""
    check_name(tag, "tag")
    if tag.isdigit():
        raise UsageError(f"invalid tag {tag!r}: a tag of digits only reads like a version; use NAME@{tag} for that version")
    return tag
