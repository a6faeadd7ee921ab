"""An in-process blob store, for tests and throwaway registries."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from tvstore.blobs.base import BlobStore, check_digest, digest_bytes

#: named stores live as long as the process, so ``memory://name`` reopens one
_STORES: dict[str, dict[str, bytes]] = {}
_LOCK = threading.Lock()
_WRITTEN: dict[str, float] = {}


class MemoryBlobStore(BlobStore):
    def __init__(self, name: str = "") -> None:
        self.url = f"memory://{name}"
        with _LOCK:
            self._blobs = _STORES.setdefault(name, {}) if name else {}

    def put(self, data: bytes) -> str:
        digest = digest_bytes(data)
        with _LOCK:
            if digest not in self._blobs:
                self._blobs[digest] = bytes(data)
                _WRITTEN[digest] = time.time()
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

    def iter_digests(self) -> Iterator[str]:
        yield from list(self._blobs)

    def modified(self, digest: str) -> float | None:
        return _WRITTEN.get(digest) if digest in self._blobs else None

    def size(self, digest: str) -> int:
        return len(self._read(check_digest(digest)))
