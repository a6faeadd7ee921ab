"""The machine record every benchmark table carries: fresh memory's speed, and records made before it existed."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` lives at the repository root

from benchmarks import machine  # noqa: E402


def test_a_snapshot_measures_fresh_memory_and_the_table_says_so() -> None:
    record = machine.finish(machine.snapshot())
    speed = record["memory"]["fresh_gbps"]
    assert speed > 0
    assert "fresh_gbps_before_settling" not in record["memory"]
    assert f"A new process filled fresh memory at {speed:.2f} GB/s. Commit " in machine.describe(record)


def test_a_settled_record_gives_both_speeds() -> None:
    record = {**machine.finish(machine.snapshot()), "memory": {"fresh_gbps_before_settling": 0.41, "fresh_gbps": 2.5}}
    assert ("A new process filled fresh memory at 2.50 GB/s after the machine was settled (0.41 GB/s before)."
            in machine.describe(record))


def test_a_record_from_before_the_probe_still_describes() -> None:
    record = machine.finish(machine.snapshot())
    del record["memory"]
    text = machine.describe(record)
    assert "fresh memory" not in text and f"Commit {record['commit']}; started {record['started']}." in text
