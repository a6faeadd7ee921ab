"""Whole-file-or-nothing writes: a temporary file in the target's folder, renamed into place.

A reader never sees a partial file and a crash leaves at most a stray
temporary (a dot-file, so listings skip it). The rename also replaces a file
we may not write to (another user's read-only blob on a shared folder), as
long as the folder is writable.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(target: Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it becomes ``target``, on error it is removed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(target: Path, data: bytes | memoryview, *, mode: int | None = None, durable: bool = False) -> None:
    """Write ``data`` to ``target`` atomically; ``durable`` fsyncs before the rename, ``mode`` sets permissions."""
    with replacing(target) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
