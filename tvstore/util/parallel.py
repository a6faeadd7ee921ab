"""Ordered, bounded parallel maps over threads, and the rows of one tensor spread over them.

Tensor work (zstd, torch ops, hashing, blob I/O) releases the GIL, so threads
use every core; the window bounds how many results wait in memory, which
keeps peak memory proportional to the window, not to the model.

Worker threads run torch ops single-threaded: the threads over tensors
already fill every core, and an OpenMP team per worker on top oversubscribes
them. On a busy machine that is ruinous, because each op's barrier waits for
a descheduled team member: a 1M-element ``add_`` took 4-8 ms with two
intra-op threads and 0.1-0.2 ms with one (2 shared cores, load 5).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _one_torch_thread() -> None:
    """Thread-pool initializer: this worker's torch ops run on its own thread only."""
    import torch  # not at module level: metadata-only commands never need torch

    torch.set_num_threads(1)


@contextmanager
def tensor_pool(workers: int, prefix: str) -> Iterator[ThreadPoolExecutor]:
    """A thread pool whose workers run torch single-threaded; the caller's setting is restored after.

    ``torch.set_num_threads`` also sets the default for threads that start
    later, so the caller's count is put back when the pool closes.
    """
    import torch

    before = torch.get_num_threads()
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=prefix, initializer=_one_torch_thread) as pool:
            yield pool
    finally:
        torch.set_num_threads(before)


def ordered_map(
    fn: Callable[[T], R], items: Iterable[T], workers: int | None = None, window: int | None = None, prefix: str = "tvstore"
) -> Iterator[R]:
    """``map(fn, items)`` on a thread pool, results in input order, at most ``window`` in flight.

    Closing the iterator early (a consumer that stops) cancels the work not yet started.
    """
    workers = workers or default_workers()
    if workers == 1:
        yield from map(fn, items)
        return
    window = window or 2 * workers
    pending: deque[Future[R]] = deque()
    with tensor_pool(workers, prefix) as pool:
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


def budgeted_map(
    fn: Callable[[T], R], items: Sequence[T], cost: Callable[[T], int], budget: int,
    workers: int | None = None, prefix: str = "tvstore",
) -> Iterator[R]:
    """``map(fn, items)`` on a thread pool, results in input order, the work running at once costing at most ``budget``.

    For work whose memory grows with its item (a tensor being encoded): a
    window of items, as :func:`ordered_map` keeps, costs a window of the
    *largest* items at worst, so a model's few huge tensors (embeddings, the
    LM head) running side by side set the peak. Here items start largest
    first, each only while the items running with it fit in ``budget`` (an
    item alone always starts), and smaller items fill the other workers
    beside a large one. Results are small and kept until their turn.
    """
    workers = workers or default_workers()
    if workers == 1:
        yield from map(fn, items)
        return
    costs = [cost(item) for item in items]
    waiting = sorted(range(len(items)), key=lambda k: -costs[k])
    running: dict[Future[R], int] = {}
    done: dict[int, R] = {}
    used, turn = 0, 0
    with tensor_pool(workers, prefix) as pool:
        try:
            while turn < len(items):
                while waiting and len(running) < workers:
                    k = next((k for k in waiting if not running or used + costs[k] <= budget), None)
                    if k is None:
                        break
                    waiting.remove(k)
                    running[pool.submit(fn, items[k])] = k
                    used += costs[k]
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in finished:
                    k = running.pop(fut)
                    used -= costs[k]
                    done[k] = fut.result()
                while turn in done:
                    yield done.pop(turn)
                    turn += 1
        finally:
            for fut in running:
                fut.cancel()


def each_row(fn: Callable[[int], None], count: int, pool: Executor | None) -> None:
    """``fn(0) ... fn(count - 1)``, on ``pool``'s threads too when given: the rows of one large tensor.

    The calling thread may itself be a worker of ``pool`` (a merge's tensor
    splitting its inputs' rows). It runs row 0, then takes back every row no
    other worker has started, and only then waits for the rows others run,
    so a worker never waits on work queued behind it (no deadlock when every
    worker does this at once), nor idles while rows are left.
    """
    if pool is None or count < 2:
        for row in range(count):
            fn(row)
        return
    futures = [pool.submit(fn, row) for row in range(1, count)]
    try:
        fn(0)
        for row, fut in enumerate(futures, start=1):
            if fut.cancel():
                fn(row)
        for fut in futures:
            if not fut.cancelled():
                fut.result()
    finally:  # after an error, no row may still be writing into the buffer when it goes back for reuse
        wait([fut for fut in futures if not fut.cancel()])  # a cancelled future never runs: waiting for it would hang
