"""Progress reporting that the library emits and a front end renders.

The library never prints; long operations call ``progress(description, total)``
and advance the returned counter. The CLI plugs in rich progress bars.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

Advance = Callable[[int], None]


class Progress(Protocol):
    def __call__(self, description: str, total: int | None) -> AbstractContextManager[Advance]: ...


@contextmanager
def no_progress(description: str, total: int | None) -> Iterator[Advance]:
    yield lambda n: None
