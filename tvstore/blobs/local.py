"""A blob store in a local folder, laid out as dvc does: ``objects/ab/cdef…``.

Writes go through :func:`tvstore.util.atomic.write_atomic`, so a reader never
sees a partial blob and a crash leaves at most a stray ``.tmp`` file. Blob
files are made read-only: they are immutable by contract.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

from tvstore.blobs.base import BlobStore, digest_bytes, fanout_path, verified
from tvstore.blobs.marks import VerifiedMarks, map_file, read_file
from tvstore.util.atomic import write_atomic


class LocalBlobStore(BlobStore):
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()
        self.objects = self.root / "objects"
        self.url = self.root.as_uri()
        self.marks = VerifiedMarks(self.root / "verified")

    def path(self, digest: str) -> Path:
        return fanout_path(self.objects, digest)

    def put(self, data: bytes) -> str:
        digest = digest_bytes(data)
        target = self.path(digest)
        if not _refresh(target):
            write_atomic(target, data, mode=0o444, durable=True)
        return digest

    def _read(self, digest: str) -> bytes:
        try:
            return self.path(digest).read_bytes()
        except FileNotFoundError:
            raise self._missing(digest) from None

    def read(self, digest: str) -> memoryview:
        """Verified bytes in a writable buffer; hashed only if this file was not verified before."""
        return self._verified_once(digest, read_file)

    def view(self, digest: str) -> memoryview:
        """Verified bytes as a read-only mapping of the blob file (no copy); hashed as :meth:`read` hashes."""
        return self._verified_once(digest, map_file)

    def _verified_once(self, digest: str, load: Callable[[Path], tuple[memoryview, os.stat_result]]) -> memoryview:
        try:
            data, st = load(self.path(digest))
        except FileNotFoundError:
            raise self._missing(digest) from None
        if not self.marks.has(digest, st):
            verified(digest, data)
            self.marks.add(digest, st)
        return data

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def delete(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)
        self.marks.drop(digest)

    def iter_digests(self) -> Iterator[str]:
        if not self.objects.is_dir():
            return
        for prefix in sorted(self.objects.iterdir()):
            if len(prefix.name) != 2 or not prefix.is_dir():
                continue
            for entry in prefix.iterdir():
                if not entry.name.startswith("."):
                    yield prefix.name + entry.name

    def modified(self, digest: str) -> float | None:
        try:
            return self.path(digest).stat().st_mtime
        except FileNotFoundError:
            return None

    def size(self, digest: str) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise self._missing(digest) from None


def _refresh(target: Path) -> bool:
    """Make an existing blob young again, so gc's grace period covers this push; ``False``: (re)write it.

    There is no separate existence check: a blob gc sweeps just before the
    refresh is simply written again. Only a file's owner may set its times
    (the file is read-only), so a dedupe hit on another user's blob in a
    shared folder is rewritten too: the rename gives the same bytes a new,
    young file of ours.
    """
    try:
        os.utime(target)
    except (FileNotFoundError, PermissionError):
        return False
    return True
