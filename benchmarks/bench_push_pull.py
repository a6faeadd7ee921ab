"""Push and pull throughput (MB/s of fp32 checkpoint data) with 1 and N concurrent clients.

Backends:

- ``local``: SQLite + the local blob folder (one registry directory);
- ``s3``: PostgreSQL (a private schema in the test database) + a moto S3 server
  (``python -m moto.server`` on a free 127.0.0.1 port, started as
  ``tests/s3_server.py`` does), with ``TVSTORE_CACHE_DIR=off`` so every read
  goes to the bucket.

Each run starts from a fresh, empty registry (new folder / new schema and S3
prefix) holding only the base (added untimed), so content addressing never
skips a blob another run wrote. Every client is a separate process (spawn)
that imports tvstore (and torch, safetensors, the codecs: import time is not
transfer time) and opens the registry before a barrier; the phase is
timed from the barrier's release to the last client's finish:

1. push: client k pushes its own fine-tune as vector ``ft{k}`` (``extra=True``
   keeps the classifier head the base lacks);
2. pull: after every push has committed, client k runs
   ``pull_checkpoint("ft{k}", out)`` (base + vector rebuilt as an HF directory).

Before each phase the files it reads locally (fine-tunes and base before a
push; the blob folder and SQLite file before a local pull) are dropped from
the page cache (``posix_fadvise(DONTNEED)``, after an fsync), so local
numbers are cold reads. Throughput = clients x fp32 bytes of one fine-tune /
phase seconds (MB = 10^6 bytes). After timing, every pulled checkpoint is
checked: bit-exact for ``lossless``, same tensor names and shapes otherwise.

Data: the real all-MiniLM-L6-v2 fine-tunes cached by ``benchmarks/eval``
(``benchmarks/.cache/finetunes/*/*/model.safetensors``, ~87 MB fp32 each);
client k uses fine-tune k mod m with its delta scaled by ``1 + 0.05 * (k // m)``,
so all N clients push distinct bytes with real-fine-tune statistics. Without
the cache, synthetic fine-tunes (base + seeded low-rank + small noise) are used.

Usage::

    python benchmarks/bench_push_pull.py                       # everything, 3 repeats (medians)
    python benchmarks/bench_push_pull.py --backends local --clients 1 --repeat 1   # quick look

Results: a markdown table on stdout and ``benchmarks/results/push_pull.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback
import uuid
from pathlib import Path

import machine
from common import pg_schema

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
FINETUNE_CACHE = REPO / "benchmarks" / ".cache" / "finetunes"
BASE_NAME = "minilm"
BARRIER_TIMEOUT_S = 1800.0
MB = 1e6


# ---- data -----------------------------------------------------------------------------------------


def base_dir() -> Path:
    sys.path.insert(0, str(REPO))
    from benchmarks.eval.finetune import base_model_dir

    return base_model_dir()


def fp32_bytes(path: Path) -> int:
    from safetensors import safe_open

    total = 0
    with safe_open(str(path), "pt") as handle:
        for key in handle.keys():
            sl = handle.get_slice(key)
            if sl.get_dtype() == "F32":
                n = 1
                for d in sl.get_shape():
                    n *= d
                total += 4 * n
    return total


def cached_finetunes(base: Path) -> list[Path]:
    """Cached real fine-tunes of ``base`` (same tensor names and shapes), sorted by task."""
    from safetensors import safe_open

    with safe_open(str(base / "model.safetensors"), "pt") as h:
        base_shapes = {k: h.get_slice(k).get_shape() for k in h.keys()}
    found = []
    for file in sorted(FINETUNE_CACHE.glob("*/*/model.safetensors")):
        with safe_open(str(file), "pt") as h:
            shapes = {k: h.get_slice(k).get_shape() for k in h.keys()}
        if all(shapes.get(k) == s for k, s in base_shapes.items()):
            found.append(file.parent)
    return found


def make_clients(work: Path, base: Path, n: int) -> tuple[list[Path], str]:
    """``n`` distinct fine-tune directories under ``work/data``; returns them and a description."""
    import torch
    from safetensors.torch import load_file, save_file

    data = work / "data"
    sources = cached_finetunes(base)
    tasks = ", ".join(dict.fromkeys(p.parent.name for p in sources))  # the eval caches one per task and seed
    kind = f"{len(sources)} real MiniLM fine-tunes ({tasks})" if sources else "synthetic"
    base_t = load_file(str(base / "model.safetensors"))
    dirs = []
    for k in range(n):
        out = data / f"ft{k}"
        dirs.append(out)
        if (out / "model.safetensors").exists():
            continue
        tmp = data / f".tmp-ft{k}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for side in base.iterdir():
            if side.is_file() and side.name != "model.safetensors":
                shutil.copy2(side, tmp / side.name)
        if sources:
            src = sources[k % len(sources)]
            scale = 1.0 + 0.05 * (k // len(sources))
            ft = load_file(str(src / "model.safetensors"))
            if scale != 1.0:
                for name, t in ft.items():
                    if t.dtype != torch.float32:
                        continue
                    b = base_t.get(name)
                    ft[name] = (b + (t - b) * scale).contiguous() if b is not None else (t * scale).contiguous()
        else:
            gen = torch.Generator().manual_seed(k)
            ft = {}
            for name, b in base_t.items():
                if b.dtype != torch.float32:
                    ft[name] = b
                    continue
                d = 1e-3 * b.std().clamp_min(1e-3) * torch.randn(b.shape, generator=gen)
                if b.dim() == 2:
                    r = 8
                    u = torch.randn(b.shape[0], r, generator=gen)
                    v = torch.randn(r, b.shape[1], generator=gen)
                    d += 1e-3 * (u @ v) / r
                ft[name] = (b + d).contiguous()
        save_file(ft, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        os.rename(tmp, out)
    return dirs, kind


# ---- page cache -----------------------------------------------------------------------------------


def drop_cache(*paths: Path) -> None:
    """fsync then ``posix_fadvise(DONTNEED)`` every file under ``paths``."""
    for root in paths:
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()] if root.exists() else []
        for file in files:
            try:
                fd = os.open(file, os.O_RDONLY)
            except OSError:
                continue
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            except OSError:
                pass
            finally:
                os.close(fd)


# ---- S3 + PostgreSQL ------------------------------------------------------------------------------


class S3Env:
    """A moto S3 server (as ``tests/s3_server.py`` starts it) with a bucket and dummy credentials."""

    def __init__(self, work: Path) -> None:
        sys.path.insert(0, str(REPO / "tests"))
        from s3_server import DUMMY_CREDENTIALS, MotoServer  # the tests' own way of starting moto

        self.server = MotoServer(work / "moto.log")
        self.server.wait_ready()
        os.environ.update(DUMMY_CREDENTIALS)
        os.environ["AWS_ENDPOINT_URL"] = self.server.endpoint
        os.environ["AWS_CONFIG_FILE"] = str(work / "no-aws-config")
        os.environ["AWS_SHARED_CREDENTIALS_FILE"] = str(work / "no-aws-credentials")
        os.environ.pop("AWS_PROFILE", None)
        os.environ["TVSTORE_CACHE_DIR"] = "off"
        import boto3

        self.bucket = f"bench-{uuid.uuid4().hex[:12]}"
        self.client = boto3.client("s3", endpoint_url=self.server.endpoint)
        self.client.create_bucket(Bucket=self.bucket)

    def clear(self, prefix: str) -> int:
        """Delete every object under ``prefix`` (moto keeps them in memory); returns their bytes."""
        total = 0
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix + "/"):
            objs = page.get("Contents", [])
            total += sum(o["Size"] for o in objs)
            if objs:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": [{"Key": o["Key"]} for o in objs]})
        return total

    def stop(self) -> None:
        self.server.stop()


# ---- one client -----------------------------------------------------------------------------------


def client(k: int, db_url: str, blob_url: str, src: str, out: str, codec: str,
           barrier, results) -> None:  # noqa: ANN001 - multiprocessing objects
    """One client process: open, [barrier] push, [barrier] pull, [barrier] check."""
    try:
        from tvstore import Registry

        name = f"ft{k}"
        reg = Registry.open(database_url=db_url, blob_url=blob_url)
        reg.bases()  # connect and check the schema before the clock starts
        import safetensors.torch  # noqa: F401 - the first push/pull would import these (~1-3 s on a busy box)
        import torch  # noqa: F401
        import tvstore.codecs  # noqa: F401
        import tvstore.tensors.encode  # noqa: F401
        import tvstore.ops.pull  # noqa: F401
        import tvstore.ops.push  # noqa: F401
        barrier.wait(BARRIER_TIMEOUT_S)
        t0 = time.monotonic()
        info = reg.push(name, src, base=BASE_NAME, codec=codec, extra=True)
        t1 = time.monotonic()
        results.put(("push", k, t0, t1, {"stored_bytes": info.stored_bytes, "raw_bytes": info.raw_bytes}))
        barrier.wait(BARRIER_TIMEOUT_S)
        t0 = time.monotonic()
        reg.pull_checkpoint(name, out)
        t1 = time.monotonic()
        results.put(("pull", k, t0, t1, {}))
        barrier.wait(BARRIER_TIMEOUT_S)
        results.put(("check", k, 0.0, 0.0, {"ok": check_pull(Path(src), Path(out), codec == "lossless")}))
        reg.close()
    except BaseException:  # noqa: BLE001 - reported to the parent, which fails the run
        results.put(("error", k, 0.0, 0.0, {"traceback": traceback.format_exc()}))
        barrier.abort()


def check_pull(src: Path, out: Path, exact: bool) -> str:
    """'' when the pulled checkpoint matches the fine-tune, else what differs."""
    import torch
    from safetensors.torch import load_file

    want = load_file(str(src / "model.safetensors"))
    got: dict = {}
    for f in sorted(out.glob("*.safetensors")):
        got.update(load_file(str(f)))
    if set(want) != set(got):
        return f"tensor names differ: missing {sorted(set(want) - set(got))[:3]}, extra {sorted(set(got) - set(want))[:3]}"
    for name, t in want.items():
        g = got[name]
        if g.shape != t.shape or g.dtype != t.dtype:
            return f"{name}: {g.dtype}{tuple(g.shape)} != {t.dtype}{tuple(t.shape)}"
        if exact and not torch.equal(g, t):
            return f"{name}: not bit-exact"
    return ""


# ---- one run --------------------------------------------------------------------------------------


def one_run(backend: str, n: int, codec: str, work: Path, sources: list[Path], base: Path,
            s3: S3Env | None) -> dict:
    from tvstore import Registry

    run_id = f"{backend}-{n}-{codec.replace(':', '_').replace('=', '')}-{uuid.uuid4().hex[:8]}"
    run_dir = work / "runs" / run_id
    run_dir.mkdir(parents=True)
    schema = "bench_pp_" + uuid.uuid4().hex[:12]
    if backend == "local":
        db_url, blob_url = f"sqlite:///{run_dir / 'registry.db'}", str(run_dir / "blobs")
    else:
        assert s3 is not None
        db_url, blob_url = pg_schema(schema, create=True), f"s3://{s3.bucket}/{run_id}"
    try:
        with Registry.open(database_url=db_url, blob_url=blob_url) as reg:
            reg.init()
            reg.add_base(BASE_NAME, base)
        ctx = mp.get_context("spawn")
        barrier = ctx.Barrier(n + 1)
        results = ctx.Queue()
        outs = [run_dir / f"pulled{k}" for k in range(n)]
        procs = [ctx.Process(target=client, args=(k, db_url, blob_url, str(sources[k]), str(outs[k]), codec, barrier, results))
                 for k in range(n)]
        for p in procs:
            p.start()
        phases: dict[str, list] = {"push": [], "pull": [], "check": []}

        def collect(phase: str) -> None:
            while len(phases[phase]) < n:
                kind, k, t0, t1, extra = results.get(timeout=BARRIER_TIMEOUT_S)
                if kind == "error":
                    raise RuntimeError(f"client {k} failed:\n{extra['traceback']}")
                phases[kind].append((k, t0, t1, extra))

        try:
            drop_cache(base / "model.safetensors", *[s / "model.safetensors" for s in sources[:n]])
            barrier.wait(BARRIER_TIMEOUT_S)  # push starts
            collect("push")
            if backend == "local":
                drop_cache(run_dir / "blobs", run_dir / "registry.db")
            barrier.wait(BARRIER_TIMEOUT_S)  # pull starts
            collect("pull")
            barrier.wait(BARRIER_TIMEOUT_S)  # checks start
            collect("check")
        except BaseException:
            barrier.abort()
            for p in procs:
                p.join(timeout=5)
                if p.is_alive():
                    p.kill()
            raise
        for p in procs:
            p.join()
        bad = [f"ft{k}: {e['ok']}" for k, _, _, e in phases["check"] if e["ok"]]
        if bad:
            raise RuntimeError("pulled checkpoints differ: " + "; ".join(bad))
        raw = sum(fp32_bytes(sources[k] / "model.safetensors") for k in range(n))
        rec = {"backend": backend, "clients": n, "codec": codec, "fp32_bytes": raw,
               "stored_bytes": sum(e["stored_bytes"] for _, _, _, e in phases["push"])}
        for phase in ("push", "pull"):
            starts = [t0 for _, t0, _, _ in phases[phase]]
            ends = [t1 for _, _, t1, _ in phases[phase]]
            wall = max(ends) - min(starts)
            rec[f"{phase}_s"] = wall
            rec[f"{phase}_client_s"] = sorted(t1 - t0 for _, t0, t1, _ in phases[phase])
            rec[f"{phase}_mb_s"] = raw / MB / wall
        return rec
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
        if backend == "s3":
            assert s3 is not None
            s3.clear(run_id)
            pg_schema(schema, create=False)


# ---- report ---------------------------------------------------------------------------------------


def summarize(records: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["backend"], r["clients"], r["codec"]), []).append(r)
    rows = []
    for (backend, n, codec), rs in groups.items():
        med = lambda key: statistics.median(r[key] for r in rs)  # noqa: E731
        rows.append({
            "backend": backend, "clients": n, "codec": codec, "runs": len(rs),
            "fp32_mb": rs[0]["fp32_bytes"] / MB, "stored_mb": med("stored_bytes") / MB,
            "push_s": med("push_s"), "push_mb_s": med("push_mb_s"),
            "push_mb_s_all": [round(r["push_mb_s"], 1) for r in rs],
            "pull_s": med("pull_s"), "pull_mb_s": med("pull_mb_s"),
            "pull_mb_s_all": [round(r["pull_mb_s"], 1) for r in rs],
        })
    return rows


BACKEND_LABEL = {"local": "SQLite + local blobs", "s3": "PostgreSQL + S3 (moto)"}


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        "# Push / pull throughput",
        "",
        f"Data: {meta['data']}; {meta['fp32_mb_per_client']:.1f} MB fp32 per client (MB = 10^6 bytes). "
        f"Median of {meta['repeat']} runs; each run a fresh registry holding only the base. "
        "Throughput = clients x fp32 bytes / (barrier release -> last client done). "
        "Clients are separate processes; push writes vector ft{k}, pull is `pull_checkpoint` (base + vector -> HF dir). "
        "Local reads are cold (page cache dropped); S3 runs with `TVSTORE_CACHE_DIR=off`.",
        "",
        machine.describe(meta["machine"]) + f" Command: `{meta['command']}`.",
        "",
        "| backend | clients | codec | stored MB (all clients) | push s | push MB/s | pull s | pull MB/s | push MB/s (runs) | pull MB/s (runs) |",
        "|---|---:|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {BACKEND_LABEL[r['backend']]} | {r['clients']} | `{r['codec']}` | {r['stored_mb']:.1f} | "
            f"{r['push_s']:.2f} | **{r['push_mb_s']:.1f}** | {r['pull_s']:.2f} | **{r['pull_mb_s']:.1f}** | "
            f"{', '.join(map(str, r['push_mb_s_all']))} | {', '.join(map(str, r['pull_mb_s_all']))} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--backends", default="local,s3", help="comma list of local, s3")
    ap.add_argument("--clients", default="1,8", help="comma list of client counts")
    ap.add_argument("--codecs", default="lossless;quant:bits=4", help="semicolon list of codec specs")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--results", type=Path, default=RESULTS, help="folder for push_pull.{md,json} ('' to skip)")
    a = ap.parse_args()

    backends = [b for b in a.backends.split(",") if b]
    counts = [int(c) for c in a.clients.split(",") if c]
    codecs = [c for c in a.codecs.split(";") if c]
    work = a.work or Path(tempfile.mkdtemp(prefix="tvstore-bench-pp-"))
    work.mkdir(parents=True, exist_ok=True)
    base = base_dir()
    sources, data_kind = make_clients(work, base, max(counts))
    import torch

    before = machine.snapshot(settle=True)
    meta = {"data": data_kind, "fp32_mb_per_client": fp32_bytes(sources[0] / "model.safetensors") / MB,
            "repeat": a.repeat, "cpus": os.cpu_count(), "load_start": " ".join(f"{x:.1f}" for x in os.getloadavg()),
            "python": sys.version.split()[0], "torch": torch.__version__, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    s3 = S3Env(work) if "s3" in backends else None
    records: list[dict] = []
    errors: list[str] = []
    try:
        for rep in range(a.repeat):
            for backend in backends:
                for n in counts:
                    for codec in codecs:
                        label = f"[{rep + 1}/{a.repeat}] {backend} clients={n} codec={codec}"
                        try:
                            rec = one_run(backend, n, codec, work, sources, base, s3)
                        except Exception as exc:  # noqa: BLE001 - recorded, the sweep goes on
                            errors.append(f"{label}: {exc}")
                            print(f"{label}: FAILED {exc}", file=sys.stderr, flush=True)
                            continue
                        rec["repeat"] = rep
                        records.append(rec)
                        print(f"{label}: push {rec['push_s']:.2f}s {rec['push_mb_s']:.1f} MB/s, "
                              f"pull {rec['pull_s']:.2f}s {rec['pull_mb_s']:.1f} MB/s", file=sys.stderr, flush=True)
    finally:
        if s3 is not None:
            s3.stop()
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)
    order = {(b, n, c): i for i, (b, n, c) in enumerate((b, n, c) for b in backends for n in counts for c in codecs)}
    rows = sorted(summarize(records), key=lambda r: order[(r["backend"], r["clients"], r["codec"])])
    meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    meta["machine"], meta["command"] = machine.finish(before), "python " + " ".join(sys.argv)
    text = markdown(rows, meta)
    if errors:
        text += "\nErrors:\n\n" + "\n".join(f"- {e.splitlines()[0]}" for e in errors) + "\n"
    print(text)
    if str(a.results):
        a.results.mkdir(parents=True, exist_ok=True)
        (a.results / "push_pull.md").write_text(text)
        (a.results / "push_pull.json").write_text(json.dumps({"meta": meta, "rows": rows, "runs": records, "errors": errors}, indent=2))
    if errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
