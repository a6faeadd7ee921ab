"""Metadata latency of ``ls``, ``show`` and ``lineage`` on a registry of 10,000 vectors.

Run on demand (not part of the test suite):

    python benchmarks/bench_metadata.py                       # SQLite and PostgreSQL (127.0.0.1:5432)
    python benchmarks/bench_metadata.py --vectors 2000 --backends sqlite

The registry is filled by inserting metadata rows directly (no blobs, no
encoding), shaped like real pushes: ``--tensors`` tensors per vector with one
component each (every fifth tensor has a second, ``fix`` component), one blob
row per component, ``--versions`` versions per name, a ``finetuned-from``
edge to the base for every vector, ``compressed-from`` edges chaining each
version to the one before, a ``difference-of`` vector for every tenth name,
and a few tags. Then each operation runs through the ``Registry`` API
(median of ``--repeat`` runs, warm) and once through the ``tvstore`` command
(wall time, including the ~2-3 s Python/torch start-up). PostgreSQL gets a
private schema that is dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import insert, select

from common import private_schema
from tvstore import Registry
from tvstore.db.models import Blob, BaseModel, ComponentRow, LineageEdge, Tag, TaskVector, VectorName, VectorTensor

RESULTS = Path(__file__).with_name("results") / "metadata.json"
CODEC = {"id": "lossless"}
BATCH = 5000


def _digest(*parts: object) -> str:
    import hashlib

    return hashlib.sha256(repr(parts).encode()).hexdigest()


def _chunks(rows: list[dict], size: int = BATCH) -> Iterator[list[dict]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def populate(reg: Registry, vectors: int, tensors: int, versions: int) -> dict[str, int]:
    """Insert ``vectors`` task vectors' metadata rows; returns row counts."""
    now = datetime.now(timezone.utc)
    names = vectors // versions
    counts = {"vectors": 0, "tensors": 0, "components": 0, "blobs": 0, "lineage": 0, "tags": 0}
    with reg.engine.begin() as conn:
        base_id = conn.execute(
            insert(BaseModel).values(name="base", digest=_digest("base"), source="/models/base", num_params=10**8,
                                     raw_bytes=4 * 10**8, stored_bytes=4 * 10**8, created_at=now).returning(BaseModel.id)
        ).scalar_one()
        vector_ids: dict[tuple[int, int], int] = {}
        for n in range(names):
            for v in range(1, versions + 1):
                kind = "difference" if n % 10 == 9 else "finetune"
                vector_ids[(n, v)] = conn.execute(
                    insert(TaskVector).values(
                        name=f"task-{n:05d}", version=v, base_id=base_id, kind=kind, codec=CODEC, raw_bytes=4 * 10**8,
                        stored_bytes=10**8, num_params=10**8, num_tensors=tensors, rel_l2=0.0, cosine=1.0,
                        meta={"task": f"task-{n}", "lr": "2e-5"}, recipe=None, source_digest=_digest("src", n, v),
                        created_at=now,
                    ).returning(TaskVector.id)
                ).scalar_one()
        counts["vectors"] = len(vector_ids)
        conn.execute(insert(VectorName), [{"name": f"task-{n:05d}", "last_version": versions, "created_at": now} for n in range(names)])
        tensor_rows = [
            {"vector_id": vid, "position": t, "name": f"layers.{t // 4}.w{t % 4}", "role": "delta", "dtype": "F32",
             "shape": [1024, 1024], "codec": CODEC, "raw_bytes": 4 * 2**20, "stored_bytes": 2**20, "rel_l2": 0.0, "cosine": 1.0}
            for vid in vector_ids.values() for t in range(tensors)
        ]
        for chunk in _chunks(tensor_rows):
            conn.execute(insert(VectorTensor), chunk)
        counts["tensors"] = len(tensor_rows)
        tensor_ids = conn.execute(select(VectorTensor.id)).scalars().all()
        comp_rows, blob_rows = [], []
        for i, tid in enumerate(tensor_ids):
            for position in range(2 if i % 5 == 0 else 1):
                digest = _digest("blob", tid, position)
                blob_rows.append({"digest": digest, "size": 2**20, "created_at": now})
                comp_rows.append({"tensor_id": tid, "position": position, "kind": "add" if position == 0 else "fix",
                                  "codec": CODEC, "blob_digest": digest, "scale": 1.0, "mask_id": None})
        for chunk in _chunks(blob_rows):
            conn.execute(insert(Blob), chunk)
        for chunk in _chunks(comp_rows):
            conn.execute(insert(ComponentRow), chunk)
        counts["components"], counts["blobs"] = len(comp_rows), len(blob_rows)
        edges = []

        def edge(child: int, relation: str, vector: int | None = None, base: int | None = None, weight: float | None = None) -> None:
            edges.append({"child_id": child, "relation": relation, "parent_vector_id": vector, "parent_base_id": base,
                          "parent_note": "base base" if base else "", "weight": weight, "created_at": now})

        for (n, v), vid in vector_ids.items():
            edge(vid, "finetuned-from", base=base_id)
            if v > 1:
                edge(vid, "compressed-from", vector=vector_ids[(n, v - 1)])
            if n % 10 == 9:
                for parent, weight in ((n - 1, 1.0), (n - 2, -1.0)):
                    edge(vid, "difference-of", vector=vector_ids[(parent, v)], weight=weight)
        for chunk in _chunks(edges):
            conn.execute(insert(LineageEdge), chunk)
        counts["lineage"] = len(edges)
        tags = [{"name": f"task-{n:05d}", "tag": "stable", "vector_id": vector_ids[(n, 1)]} for n in range(0, names, 7)]
        conn.execute(insert(Tag), tags)
        counts["tags"] = len(tags)
    return counts


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Median wall seconds of ``repeat`` warm runs (after one untimed warm-up)."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cli_seconds(env: dict[str, str], *args: str) -> float:
    start = time.perf_counter()
    proc = subprocess.run([str(Path(sys.executable).with_name("tvstore")), *args], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"tvstore {' '.join(args)} failed: {proc.stderr.strip()}")
    return time.perf_counter() - start


@contextmanager
def backend(kind: str, workdir: Path) -> Iterator[str]:
    """A database URL for an empty registry (a fresh SQLite file, or a private PostgreSQL schema)."""
    if kind == "sqlite":
        yield f"sqlite:///{workdir / 'bench.db'}"
        return
    with private_schema() as url:
        yield url


def run(kind: str, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp, backend(kind, Path(tmp)) as url:
        with Registry.open(database_url=url, blob_url=str(Path(tmp) / "blobs")) as reg:
            reg.init()
            start = time.perf_counter()
            counts = populate(reg, args.vectors, args.tensors, args.versions)
            fill = time.perf_counter() - start
            names = args.vectors // args.versions
            mid = f"task-{names // 2 + 9 - (names // 2) % 10:05d}"  # a difference vector: two parents + a chain
            chain_root = f"task-{names // 2:05d}@1"  # descendants: the whole version chain
            ops = {
                "ls (newest of each name)": lambda: reg.list(),
                "ls -a (every version)": lambda: reg.list(all_versions=True),
                "ls NAME -a": lambda: reg.list(mid, all_versions=True),
                "show NAME": lambda: reg.show(mid),
                "show NAME --tensors": lambda: reg.tensors(mid),
                "lineage NAME (ancestors)": lambda: reg.lineage(mid),
                "lineage NAME@1 (descendants)": lambda: reg.lineage(chain_root),
            }
            api = {op: timed(fn, args.repeat) for op, fn in ops.items()}
            assert len(reg.list()) == names
        env = {**os.environ, "TVSTORE_DATABASE_URL": url, "TVSTORE_BLOB_URL": str(Path(tmp) / "blobs")}
        cli = {
            "tvstore ls": cli_seconds(env, "ls", "--json"),
            "tvstore show": cli_seconds(env, "show", mid, "--json"),
            "tvstore lineage": cli_seconds(env, "lineage", mid, "--json"),
            "tvstore --help (start-up only)": cli_seconds(env, "--help"),
        }
    return {"backend": kind, "rows": counts, "fill_s": fill, "api_s": api, "cli_s": cli}


def table(results: list[dict]) -> str:
    kinds = [r["backend"] for r in results]
    lines = [f"{'operation':40s}" + "".join(f"{k:>14s}" for k in kinds)]
    for section, unit, scale in (("api_s", "ms", 1000), ("cli_s", "s", 1)):
        for op in results[0][section]:
            label = f"{op} [{unit}]" if section == "api_s" else f"{op} [{unit}, wall]"
            lines.append(f"{label:40s}" + "".join(f"{r[section][op] * scale:14.1f}" if unit == "ms" else f"{r[section][op]:14.2f}" for r in results))
    lines.append(f"{'fill (direct inserts) [s]':40s}" + "".join(f"{r['fill_s']:14.1f}" for r in results))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=10_000)
    parser.add_argument("--tensors", type=int, default=20)
    parser.add_argument("--versions", type=int, default=5, help="versions per name")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    import machine  # this folder is on sys.path when run as a script

    before = machine.snapshot(settle=True)
    results = [run(kind, args) for kind in args.backends.split(",")]
    print(f"{args.vectors} vectors x {args.tensors} tensors, {args.versions} versions per name; rows: {results[0]['rows']}")
    print(table(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {"args": {k: str(v) for k, v in vars(args).items()}, "results": results,
              "machine": machine.finish(before), "command": "python " + " ".join(sys.argv)}
    args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
