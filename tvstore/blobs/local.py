"""A blob store in a local folder, laid out as dvc does: ``objects/ab/cdef…``.

Writes go to a temporary file in the same folder and are renamed into place,
so a reader never sees a partial blob and a crash leaves at most a stray
``.tmp`` file. Blob files are made read-only: they are immutable by contract.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tvstore.blobs.base import BlobStore, check_digest, digest_bytes


class LocalBlobStore(BlobStore):
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()
        self.objects = self.root / "objects"
        self.url = self.root.as_uri()

    def path(self, digest: str) -> Path:
        check_digest(digest)
        return self.objects / digest[:2] / digest[2:]

    def put(self, data: bytes) -> str:
        digest = digest_bytes(data)
        target = self.path(digest)
        if target.exists():
            os.utime(target)  # a re-put refreshes the blob's age, so gc's grace period covers this push
            return digest
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o444)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest

    def _read(self, digest: str) -> bytes:
        try:
            return self.path(digest).read_bytes()
        except FileNotFoundError:
            raise self._missing(digest) from None

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def delete(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)

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
