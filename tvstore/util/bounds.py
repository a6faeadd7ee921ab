"""The allowed range of a numeric parameter, declared once and checked in one wording.

Codec fields, merge-method parameters and pack options all take numbers from
users; a NaN, an infinity or an out-of-range value must be refused before
anything is computed or written, with a message that names the parameter and
its range (``bits must be an integer in 1..8, got 100``). Declaring the range
next to the parameter keeps the check and its message in one place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Bounds:
    """``kind`` (int or float) and an optional ``lo``/``hi``, each closed unless marked open.

    Floats must always be finite; ints must be real integers (not booleans).
    """

    kind: type = float
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def describe(self) -> str:
        """``an integer in 1..8``, ``a number in (0, 1]``, ``a finite number``, ``an integer >= 1``."""
        noun = "an integer" if self.kind is int else ("a finite number" if self.lo is None and self.hi is None else "a number")
        lo, hi = _fmt(self.lo), _fmt(self.hi)
        if self.lo is not None and self.hi is not None:
            if self.kind is int:
                return f"{noun} in {lo}..{hi}"
            return f"{noun} in {'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{noun} {'>' if self.lo_open else '>='} {lo}"
        if self.hi is not None:
            return f"{noun} {'<' if self.hi_open else '<='} {hi}"
        return noun

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is of the right kind, finite and inside the range."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind is int and not isinstance(value, int):
            return False
        if not math.isfinite(value):
            return False
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return not (self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi))

    def check(self, name: str, value: Any) -> None:
        """``ValueError`` naming ``name`` and the range unless ``value`` is inside it."""
        if not self.contains(value):
            raise ValueError(f"{name} must be {self.describe()}, got {value!r}")


def _fmt(x: float | None) -> str:
    return str(x) if x is None or isinstance(x, int) else f"{x:g}"


#: the largest count any parameter may hold (ranks, group sizes, levels): fits every header field
MAX_COUNT = 2**31 - 1
FINITE = Bounds(float)
UNIT_OPEN_CLOSED = Bounds(float, 0, 1, lo_open=True)  # (0, 1]: densities, energy fractions
UNIT_CLOSED_OPEN = Bounds(float, 0, 1, hi_open=True)  # [0, 1): drop probabilities
NON_NEGATIVE = Bounds(float, 0)
POSITIVE_INT = Bounds(int, 1, MAX_COUNT)
NON_NEGATIVE_INT = Bounds(int, 0, MAX_COUNT)
