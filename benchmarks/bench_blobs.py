"""Blob store throughput: put/get MB/s, local folder vs S3, 1 and 8 concurrent clients.

Run on demand (not part of the test suite):

    python benchmarks/bench_blobs.py                   # starts a moto S3 server on loopback
    python benchmarks/bench_blobs.py --s3-endpoint http://minio:9000 --bucket bench

Each client is a separate store object (its own boto3 client and connection
pool), as separate users would be; clients run as threads, or as processes
with ``--processes``. The total bytes are fixed and split between clients, so
MB/s across rows is comparable. moto is an in-process Python emulator, so its
numbers bound tvstore's own overhead rather than predict AWS.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from tvstore.blobs import BlobStore, LocalBlobStore, digest_bytes
from tvstore.blobs.cache import CachedBlobStore
from tvstore.blobs.s3 import S3BlobStore

MiB = 1024 * 1024


@dataclass(frozen=True)
class Row:
    store: str
    op: str
    clients: int
    nbytes: int
    seconds: float

    @property
    def mb_s(self) -> float:
        return self.nbytes / MiB / self.seconds


def open_store(spec: str) -> BlobStore:
    """``local:PATH``, ``s3:BUCKET``, or ``cached:BUCKET:CACHEDIR`` — picklable for worker processes."""
    kind, _, rest = spec.partition(":")
    if kind == "local":
        return LocalBlobStore(rest)
    if kind == "s3":
        return S3BlobStore(rest, "bench")
    bucket, _, cache_dir = rest.partition(":")
    return CachedBlobStore(S3BlobStore(bucket, "bench"), cache_dir, max_bytes=1 << 40)


_WORKER = threading.local()


def worker_store(spec: str) -> BlobStore:
    """This worker's own store (one per thread or process), made once: client set-up is off the clock."""
    stores = _WORKER.__dict__.setdefault("stores", {})
    if spec not in stores:
        stores[spec] = open_store(spec)
    return stores[spec]


def warm_up(spec: str) -> None:
    worker_store(spec)
    time.sleep(0.3)  # hold this worker so each of the others gets a warm-up job too


def client_put(spec: str, datas: list[bytes]) -> list[str]:
    store = worker_store(spec)
    return [store.put(data) for data in datas]


def client_get(spec: str, digests: list[str]) -> int:
    store = worker_store(spec)
    return sum(len(store.get(digest)) for digest in digests)


def make_blob(seed: int, size: int) -> bytes:
    """Incompressible, distinct per seed, cheap to regenerate inside a worker."""
    block = digest_bytes(seed.to_bytes(8, "little")).encode() * 16  # 1 KiB
    head = os.urandom(64)
    return (head + block * (size // len(block) + 1))[:size]


def split(items: list, parts: int) -> list[list]:
    return [items[i::parts] for i in range(parts)]


def run_clients(pool: Executor, fn: Callable, jobs: list[tuple]) -> tuple[list, float]:
    started = time.perf_counter()
    results = [f.result() for f in [pool.submit(fn, *job) for job in jobs]]
    return results, time.perf_counter() - started


def bench(name: str, spec: str, clients: int, blobs: int, size: int, processes: bool) -> list[Row]:
    executor = ProcessPoolExecutor if processes else ThreadPoolExecutor
    datas = [make_blob(uuid.uuid4().int % 2**63, size) for _ in range(blobs)]
    with executor(clients) as pool:
        run_clients(pool, warm_up, [(spec,)] * clients)
        put_results, put_s = run_clients(pool, client_put, [(spec, chunk) for chunk in split(datas, clients)])
        digests = [d for chunk in put_results for d in chunk]
        got, get_s = run_clients(pool, client_get, [(spec, d) for d in split(digests, clients)])
        rows = [Row(name, "put", clients, blobs * size, put_s), Row(name, "get", clients, blobs * size, get_s)]
        if spec.startswith("cached:"):
            _, warm_s = run_clients(pool, client_get, [(spec, d) for d in split(digests, clients)])
            rows.append(Row(name, "get (warm cache)", clients, blobs * size, warm_s))
    assert sum(got) == blobs * size
    return rows


def bench_many(bucket: str, blobs: int, size: int) -> list[Row]:
    """One client, parallel transfers inside it (``put_many``/``get_many``)."""
    store = S3BlobStore(bucket, "bench-many")
    datas = [make_blob(uuid.uuid4().int % 2**63, size) for _ in range(blobs)]
    started = time.perf_counter()
    digests = store.put_many(datas)
    put_s = time.perf_counter() - started
    started = time.perf_counter()
    assert len(store.get_many(digests)) == blobs
    get_s = time.perf_counter() - started
    store.close()
    threads = store.settings.max_concurrency
    return [Row("s3 put_many/get_many", "put", threads, blobs * size, put_s),
            Row("s3 put_many/get_many", "get", threads, blobs * size, get_s)]


@contextmanager
def moto_server() -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise SystemExit(f"moto server did not start on {endpoint}")
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def print_table(rows: list[Row]) -> None:
    print(f"{'store':<22} {'op':<17} {'clients':>7} {'MiB':>7} {'seconds':>8} {'MiB/s':>8}")
    for r in rows:
        print(f"{r.store:<22} {r.op:<17} {r.clients:>7} {r.nbytes / MiB:>7.0f} {r.seconds:>8.2f} {r.mb_s:>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blobs", type=int, default=16, help="blobs per scenario")
    parser.add_argument("--size-mib", type=float, default=4, help="size of each blob")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--processes", action="store_true", help="clients as processes, not threads")
    parser.add_argument("--s3-endpoint", help="benchmark this endpoint instead of a local moto server")
    parser.add_argument("--bucket", help="existing bucket to use with --s3-endpoint")
    args = parser.parse_args()
    size = int(args.size_mib * MiB)
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        os.environ.setdefault(name, value)
    with tempfile.TemporaryDirectory() as tmp, (
        _given(args.s3_endpoint) if args.s3_endpoint else moto_server()
    ) as endpoint:
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        bucket = args.bucket or _make_bucket()
        rows: list[Row] = []
        for clients in args.clients:
            rows += bench("local", f"local:{tmp}/local-{clients}", clients, args.blobs, size, args.processes)
            rows += bench("s3 (moto)" if not args.s3_endpoint else "s3", f"s3:{bucket}", clients,
                          args.blobs, size, args.processes)
            rows += bench("s3 + cache", f"cached:{bucket}:{tmp}/cache-{clients}", clients, args.blobs, size,
                          args.processes)
        rows += bench_many(bucket, args.blobs, size)
    print(f"{args.blobs} blobs x {args.size_mib:g} MiB per scenario; clients as "
          f"{'processes' if args.processes else 'threads'}; endpoint {endpoint}")
    print_table(rows)


@contextmanager
def _given(endpoint: str) -> Iterator[str]:
    yield endpoint


def _make_bucket() -> str:
    import boto3

    name = f"tvstore-bench-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


if __name__ == "__main__":
    main()
