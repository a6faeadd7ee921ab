"""Ordered, bounded parallel map over threads.

Tensor work (zstd, torch ops, hashing, blob I/O) releases the GIL, so threads
use every core; the window bounds how many results wait in memory, which
keeps peak memory proportional to the window, not to the model.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int | None = None, window: int | None = None) -> Iterator[R]:
    """``map(fn, items)`` on a thread pool, results in input order, at most ``window`` in flight."""
    workers = workers or default_workers()
    if workers == 1:
        yield from map(fn, items)
        return
    window = window or 2 * workers
    pending: deque[Future[R]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tvstore") as pool:
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= window:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()
