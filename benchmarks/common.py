"""Helpers shared by the benchmarks (run as scripts: ``python benchmarks/bench_*.py``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PG_URL = os.environ.get("TVSTORE_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def pg_schema(schema: str, create: bool) -> str:
    """Drop ``schema`` in the benchmark database and, with ``create``, make it anew; its URL."""
    from sqlalchemy import create_engine, text

    engine = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        if create:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    return f"{PG_URL}?options=-csearch_path%3D{schema}"


@contextmanager
def private_schema(prefix: str = "bench") -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        yield pg_schema(schema, create=True)
    finally:
        pg_schema(schema, create=False)


def run_child(script: str, *args: str, out: Path | None = None, env: dict[str, str] | None = None) -> list[str]:
    """Run ``script _child ARGS`` as a fresh process (a measurement never shares a process with another);
    ``out``, its output directory, is cleared before and after; ``env`` replaces the environment.
    Returns its stdout lines."""
    if out is not None:
        shutil.rmtree(out, ignore_errors=True)
    proc = subprocess.run([sys.executable, script, "_child", *args], capture_output=True, text=True, check=False,
                          env=env)
    if out is not None:
        shutil.rmtree(out, ignore_errors=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{args[0]} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout.strip().splitlines()
