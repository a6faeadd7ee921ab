"""tvstore.util.parallel.each_row: the rows of one tensor spread over a pool that may be running the caller."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tvstore.util.parallel import each_row


def test_each_row_runs_every_row_once_even_when_every_worker_waits_on_rows() -> None:
    done: list[tuple[int, int]] = []
    with ThreadPoolExecutor(2) as pool:
        jobs = [pool.submit(each_row, lambda row, t=t: done.append((t, row)), 5, pool) for t in range(2)]
        for job in jobs:
            job.result(timeout=30)  # a worker waiting on rows queued behind it would hang here
    assert sorted(done) == [(t, r) for t in range(2) for r in range(5)]


def test_each_row_raises_a_rows_error_after_every_row_has_stopped() -> None:
    finished: list[int] = []

    def fill(row: int) -> None:
        if row == 0:
            raise ValueError("row 0 is bad")
        time.sleep(0.05)
        finished.append(row)

    with ThreadPoolExecutor(2) as pool:
        with pytest.raises(ValueError, match="row 0 is bad"):
            each_row(fill, 3, pool)
        started = len(finished)
        time.sleep(0.1)
        assert len(finished) == started  # nothing still writing after each_row returned
