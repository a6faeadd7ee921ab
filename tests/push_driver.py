"""Many pushing processes for the concurrency and crash tests, cheaply.

Starting a Python process that imports torch costs about two seconds, so this
driver pays it once: it imports tvstore, then ``fork``s one child per push
(or gc loop). Children are real processes with their own database
connections and S3 clients; they open the registry, wait at a shared start
line (a pipe the driver closes), and run. In ``crash`` mode the driver then
kills each pusher with SIGKILL, after a delay or at a deterministic point.

Run as ``python push_driver.py SPEC.json``; prints one JSON report on stdout.

SPEC fields: ``database_url``, ``blob_url``, ``workdir`` and
- ``pushers``: ``[{"name", "path", "base", "meta"}, ...]`` lists, one list per
  process (each process pushes its list in order);
- ``gc``: optional ``{"processes": n, "grace": seconds}``: gc loops that run
  until every pusher has exited;
- ``waves``: optional lists of pusher indices run one group after another
  (default: all at once);
- ``kills``: optional, one per pusher process: ``{"delay": seconds}`` (SIGKILL
  that long after the start line) or ``{"at": point}``, a deterministic point
  where the child kills itself (see ``HOOKS``).

Deterministic points (test-only monkeypatches inside the child, no product hook):
``put:K`` before the K-th blob put, ``rename:K`` with the K-th local blob
written to its temporary file but not yet renamed, ``encoded`` with every
blob written and the transaction not begun, ``claimed`` inside the
commit transaction after the blob rows are locked, ``flushed`` after the
vector rows are flushed and before COMMIT, ``commit`` at the DBAPI commit
call, ``committed`` just after the commit returned.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from sqlalchemy.orm import configure_mappers

import tvstore.ops.push as push_module
import tvstore.ops.commit as record
from tvstore import Registry


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _after(fn, then):  # noqa: ANN001, ANN202 - wraps any callable
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        result = fn(*args, **kwargs)
        then()
        return result

    return wrapped


def _on_nth(n: int, then):  # noqa: ANN001, ANN202
    count = {"calls": 0}

    def check() -> None:
        count["calls"] += 1
        if count["calls"] == n:
            then()

    return check


def install_hook(reg: Registry, point: str) -> None:
    """Make this (child) process SIGKILL itself at ``point``."""
    kind, _, arg = point.partition(":")
    if kind == "put":
        put, check = reg.blobs.put, _on_nth(int(arg), _die)
        reg.blobs.put = lambda data: (check(), put(data))[1]  # type: ignore[method-assign]
    elif kind == "rename":
        replace, check = os.replace, _on_nth(int(arg), _die)

        def renaming(src: Any, dst: Any) -> None:
            if str(src).endswith(".tmp"):  # a local blob's temporary file, written and fsynced
                check()
            replace(src, dst)

        os.replace = renaming  # type: ignore[assignment]
    elif kind == "encoded":
        push_module.push_finetune = _after(push_module.push_finetune, _die)
    elif kind == "claimed":
        record.claim_blobs = _after(record.claim_blobs, _die)
    elif kind == "flushed":
        record._insert_vector = _after(record._insert_vector, _die)
    elif kind == "commit":
        from sqlalchemy import event

        event.listen(reg.engine, "commit", lambda conn: _die())
    elif kind == "committed":
        record.commit_vector = _after(record.commit_vector, _die)
    else:
        raise ValueError(f"unknown kill point {point!r}")


def install_trace(reg: Registry, path: Path) -> None:
    """Append a line at each phase of a push, so a killed push's log says where it died.

    ``put`` / ``put-done`` around each blob put, ``blobs-done`` when encoding
    finished, ``claimed`` and ``flushed`` inside the commit transaction,
    ``committed`` after it.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    def mark(text: str):  # noqa: ANN202
        return lambda *_: os.write(fd, f"{text}\n".encode())

    put = reg.blobs.put
    reg.blobs.put = lambda data: (mark("put")(), put(data), mark("put-done")())[1]  # type: ignore[method-assign]
    push_module.push_finetune = _after(push_module.push_finetune, mark("blobs-done"))
    record.claim_blobs = _after(record.claim_blobs, mark("claimed"))
    record._insert_vector = _after(record._insert_vector, mark("flushed"))
    record.commit_vector = _after(record.commit_vector, mark("committed"))


def phase(trace: list[str]) -> str:
    """Where a push was when it died, from its trace."""
    last = trace[-1] if trace else ""
    return {
        "": "before any blob", "put": "blob writes", "put-done": "blob writes", "blobs-done": "between blobs and commit",
        "claimed": "commit transaction", "flushed": "commit transaction", "committed": "after commit",
    }[last]


def push_all(spec: dict, index: int, go: int, kill: dict | None) -> None:
    """Body of one pushing child: open, wait at the start line, push, record results."""
    torch.set_num_threads(1)
    out = Path(spec["workdir"]) / f"pusher-{index}.json"
    results = []
    with Registry.open(database_url=spec["database_url"], blob_url=spec["blob_url"]) as reg:
        reg.check_schema()  # connect and load the migration scripts before the start line
        reg.blobs.exists("0" * 64)  # and open the blob store's connection (S3: bucket check, TCP)
        reg.base(spec["pushers"][index][0]["base"])  # and compile the common queries
        install_trace(reg, Path(spec["workdir"]) / f"pusher-{index}.trace")
        if kill and "at" in kill:
            install_hook(reg, kill["at"])
        os.read(go, 1)
        for job in spec["pushers"][index]:
            try:
                info = reg.push(job["name"], job["path"], base=job["base"], meta=job.get("meta", {}))
                results.append({"name": info.name, "version": info.version, "meta": info.meta})
            except Exception as exc:  # noqa: BLE001 - reported to the test
                results.append({"name": job["name"], "error": f"{type(exc).__name__}: {exc}",
                                "trace": traceback.format_exc()})
            out.write_text(json.dumps(results))


def gc_loop(spec: dict, index: int, go: int, stop: Path) -> None:
    """Body of a gc child: collect garbage again and again until the pushers are done."""
    out = Path(spec["workdir"]) / f"gc-{index}.json"
    runs, swept, errors = 0, [], []
    with Registry.open(database_url=spec["database_url"], blob_url=spec["blob_url"]) as reg:
        reg.check_schema()
        os.read(go, 1)
        while not stop.exists():
            try:
                swept += reg.gc(grace_seconds=spec["gc"]["grace"]).swept
            except Exception as exc:  # noqa: BLE001 - reported to the test
                errors.append(f"{type(exc).__name__}: {exc}")
            runs += 1
    out.write_text(json.dumps({"runs": runs, "swept": swept, "errors": errors}))


#: a child never outlives a hung test by more than this
CHILD_ALARM_S = 180


def fork(body, close: int, *args: Any) -> int:  # noqa: ANN001
    """Run ``body(*args)`` in a child process; ``close`` is the start line's write end (the driver's alone)."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(close)
            signal.alarm(CHILD_ALARM_S)
            body(*args)
        except BaseException:  # noqa: BLE001 - the child must never return into the driver
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pid


def status(raw: int) -> dict:
    if os.WIFSIGNALED(raw):
        return {"signal": os.WTERMSIG(raw)}
    return {"exit": os.WEXITSTATUS(raw)}


def run_wave(spec: dict, indices: list[int], kills: list, stop: Path, report: dict) -> None:
    """Fork the pushers ``indices`` (and the gc loops), start them together, kill as told, reap them."""
    go_read, go_write = os.pipe()
    pushers = {i: fork(push_all, go_write, spec, i, go_read, kills[i]) for i in indices}
    gcs = [fork(gc_loop, go_write, spec, i, go_read, stop) for i in range(spec.get("gc", {}).get("processes", 0))]
    os.close(go_read)
    time.sleep(spec.get("settle", 0.5))  # let every child reach the start line
    started = time.monotonic()
    os.close(go_write)
    for delay, i in sorted((kills[i]["delay"], i) for i in indices if kills[i] and "delay" in kills[i]):
        time.sleep(max(0.0, started + delay - time.monotonic()))
        try:
            os.kill(pushers[i], signal.SIGKILL)
        except ProcessLookupError:
            pass
    for i, pid in pushers.items():
        _, raw = os.waitpid(pid, 0)
        report["pushers"][i] = {**status(raw), "elapsed": time.monotonic() - started}
    stop.touch()
    for pid in gcs:
        _, raw = os.waitpid(pid, 0)
        report["gc"].append(status(raw))


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    configure_mappers()  # once, before forking, instead of in every child
    workdir = Path(spec["workdir"])
    workdir.mkdir(parents=True, exist_ok=True)
    stop = workdir / "stop"
    count = len(spec["pushers"])
    kills = spec.get("kills") or [None] * count
    report: dict[str, list] = {"pushers": [None] * count, "gc": []}
    for wave in spec.get("waves") or [list(range(count))]:
        stop.unlink(missing_ok=True)
        run_wave(spec, wave, kills, stop, report)
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1])
