"""An in-process blob store, for tests and throwaway registries."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from tvstore.blobs.base import BlobStore, check_digest, digest_bytes


@dataclass
class _Shelf:
    """One store's blobs and their write times (a store's ages are its own, as files' mtimes are)."""

    blobs: dict[str, bytes] = field(default_factory=dict)
    written: dict[str, float] = field(default_factory=dict)


#: named stores live as long as the process, so ``memory://name`` reopens one
_STORES: dict[str, _Shelf] = {}
_LOCK = threading.Lock()


class MemoryBlobStore(BlobStore):
    def __init__(self, name: str = "") -> None:
        self.url = f"memory://{name}"
        with _LOCK:
            self._shelf = _STORES.setdefault(name, _Shelf()) if name else _Shelf()
        self._blobs = self._shelf.blobs

    def put(self, data: bytes) -> str:
        digest = digest_bytes(data)
        with _LOCK:
            self._blobs.setdefault(digest, bytes(data))
            self._shelf.written[digest] = time.time()  # a re-put makes the blob young, as on every backend
        return digest

    def _read(self, digest: str) -> bytes:
        try:
            return self._blobs[digest]
        except KeyError:
            raise self._missing(digest) from None

    def exists(self, digest: str) -> bool:
        return check_digest(digest) in self._blobs

    def delete(self, digest: str) -> None:
        with _LOCK:
            self._blobs.pop(check_digest(digest), None)
            self._shelf.written.pop(digest, None)

    def iter_digests(self) -> Iterator[str]:
        yield from list(self._blobs)

    def modified(self, digest: str) -> float | None:
        return self._shelf.written.get(digest) if digest in self._blobs else None

    def size(self, digest: str) -> int:
        return len(self._read(check_digest(digest)))
