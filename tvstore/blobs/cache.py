"""A read-through local cache in front of a remote blob store.

Pulling the same base-model components over and over from a bucket is slow
and billed, and blobs never change, so a local copy keyed by digest is always
valid — as long as its bytes are. Every cache hit is re-hashed; a corrupt
entry is dropped and fetched again. Several processes may share one cache
folder: entries appear by atomic rename, and eviction shrugs off files that
another process removed first. Eviction is LRU-ish: hits bump a file's mtime,
and the oldest files go first once the folder outgrows its cap.

The remote stays the source of truth: ``exists``, ``size``, listing and
deletion all ask it, so gc and ``verify`` see the bucket, not the cache.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from tvstore.blobs.base import BlobStore, digest_bytes, fanout_path
from tvstore.blobs.cache_config import cache_settings, default_cache_dir
from tvstore.util.atomic import write_atomic

log = logging.getLogger(__name__)

#: rescan the folder at least this often, to notice what other processes added
RESCAN_S = 60.0
#: eviction frees space down to this fraction of the cap, so it does not run on every write
LOW_WATER = 0.9
#: a temporary file older than this was left by a crashed writer
STALE_TMP_S = 3600.0


class CachedBlobStore(BlobStore):
    """``remote`` with a local, size-capped, verified copy of what was read."""

    def __init__(
        self,
        remote: BlobStore,
        cache_dir: str | os.PathLike[str] | None = None,
        max_bytes: int | None = None,
        *,
        populate_on_put: bool = False,
    ) -> None:
        default_dir, default_max = cache_settings()
        self.remote = remote
        self.root = Path(cache_dir or default_dir or default_cache_dir()).expanduser()
        self.objects = self.root / "objects"
        self.max_bytes = default_max if max_bytes is None else max_bytes
        self.populate_on_put = populate_on_put
        self._lock = threading.Lock()
        self._estimate: int | None = None  # bytes in the folder, as far as we know
        self._scanned_at = 0.0

    @property
    def url(self) -> str:  # type: ignore[override]
        return self.remote.url

    @property
    def is_remote(self) -> bool:  # type: ignore[override]
        return self.remote.is_remote  # a first read still crosses the network

    def path(self, digest: str) -> Path:
        return fanout_path(self.objects, digest)

    # -- reads: cache first -------------------------------------------------

    def get(self, digest: str) -> bytes:
        data = self._load(digest)
        if data is None:
            data = self.remote.get(digest)
            self._store(digest, data)
        return data

    def get_many(self, digests: Iterable[str]) -> dict[str, bytes]:
        wanted = list(dict.fromkeys(digests))
        found = {d: data for d in wanted if (data := self._load(d)) is not None}
        fetched = self.remote.get_many([d for d in wanted if d not in found])
        for digest, data in fetched.items():
            self._store(digest, data)
        return {d: found[d] if d in found else fetched[d] for d in wanted}

    def _read(self, digest: str) -> bytes:
        return self.get(digest)

    # -- everything else: the remote decides -----------------------------------

    def put(self, data: bytes) -> str:
        digest = self.remote.put(data)
        if self.populate_on_put:
            self._store(digest, data)
        return digest

    def put_many(self, datas: Iterable[bytes]) -> list[str]:
        datas = list(datas)
        digests = self.remote.put_many(datas)
        if self.populate_on_put:
            for digest, data in zip(digests, datas):
                self._store(digest, data)
        return digests

    def exists(self, digest: str) -> bool:
        return self.remote.exists(digest)

    def size(self, digest: str) -> int:
        return self.remote.size(digest)

    def modified(self, digest: str) -> float | None:
        return self.remote.modified(digest)

    def delete(self, digest: str) -> None:
        self.remote.delete(digest)
        self.path(digest).unlink(missing_ok=True)

    def iter_digests(self) -> Iterator[str]:
        return self.remote.iter_digests()

    def close(self) -> None:
        self.remote.close()

    # -- the local folder ---------------------------------------------------

    def _load(self, digest: str) -> bytes | None:
        """Verified cached bytes, or ``None`` (absent, vanished, or corrupt and now dropped)."""
        path = self.path(digest)
        try:
            data = path.read_bytes()
        except OSError:  # absent, vanished, or the cache folder is unusable
            return None
        if digest_bytes(data) != digest:
            log.warning("dropping corrupt cache entry %s", path)
            path.unlink(missing_ok=True)
            return None
        try:
            os.utime(path)  # recently used: evict it last
        except OSError:
            pass
        return data

    def _store(self, digest: str, data: bytes) -> None:
        """Best effort: a cache that cannot write (full disk, permissions) only costs speed."""
        if len(data) > self.max_bytes:
            return
        try:
            write_atomic(self.path(digest), data)
        except OSError as exc:
            log.warning("could not cache blob %s in %s: %s", digest, self.root, exc)
            return
        self._account(len(data))

    def _account(self, added: int) -> None:
        with self._lock:
            if self._estimate is not None:
                self._estimate += added
            due = time.monotonic() - self._scanned_at > RESCAN_S
            if self._estimate is None or self._estimate > self.max_bytes or due:
                self._estimate = self.evict(self.max_bytes)

    def evict(self, max_bytes: int) -> int:
        """Remove least recently used entries until the folder holds at most ``LOW_WATER * max_bytes``
        if it holds more than ``max_bytes``; returns the bytes left. Safe to race with other processes."""
        entries = _scan(self.objects)
        self._scanned_at = time.monotonic()
        total = sum(size for _, size, _ in entries)
        if total <= max_bytes:
            return total
        goal = int(max_bytes * LOW_WATER)
        for path, size, _ in sorted(entries, key=lambda e: e[2]):
            if total <= goal:
                break
            try:
                path.unlink()
            except FileNotFoundError:
                pass  # another process evicted it: it no longer counts either way
            except OSError as exc:
                log.warning("could not evict %s: %s", path, exc)
                continue
            total -= size
        return total


def _scan(objects: Path) -> list[tuple[Path, int, float]]:
    """``(path, size, mtime)`` of every cache entry; also sweeps stale temporary files."""
    entries: list[tuple[Path, int, float]] = []
    now = time.time()
    try:
        prefixes = list(os.scandir(objects))
    except FileNotFoundError:
        return entries
    for prefix in prefixes:
        try:
            children = list(os.scandir(prefix.path))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for child in children:
            try:
                st = child.stat()
            except FileNotFoundError:
                continue
            if child.name.startswith("."):
                if now - st.st_mtime > STALE_TMP_S:
                    Path(child.path).unlink(missing_ok=True)
                continue
            entries.append((Path(child.path), st.st_size, st.st_mtime))
    return entries


def without_cache(store: BlobStore) -> BlobStore:
    """The store behind any cache: what ``verify`` must read, since the bucket, not a local copy, is the record."""
    while isinstance(store, CachedBlobStore):
        store = store.remote
    return store
