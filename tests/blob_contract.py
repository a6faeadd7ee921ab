"""The contract every ``BlobStore`` backend must honour (zarr's ``StoreTests`` pattern).

A backend's test module subclasses :class:`BlobStoreContract` and provides a
``store`` fixture, an ``other`` fixture (a second, independent store of the
same backend), and ``corrupt(store, digest, data)`` that overwrites a blob's
stored bytes behind the store's back.
"""

from __future__ import annotations

import threading
import time

import pytest

from tvstore.blobs import BlobStore, digest_bytes, open_blob_store
from tvstore.errors import CorruptBlobError, NotFoundError


class BlobStoreContract:
    @pytest.fixture
    def store(self) -> BlobStore:  # pragma: no cover - overridden
        raise NotImplementedError

    @pytest.fixture
    def other(self) -> BlobStore:  # pragma: no cover - overridden
        raise NotImplementedError

    def corrupt(self, store: BlobStore, digest: str, data: bytes) -> None:  # pragma: no cover
        raise NotImplementedError

    def test_put_returns_sha256_and_get_round_trips(self, store: BlobStore) -> None:
        data = b"task vector bytes \x00\xff" * 100
        digest = store.put(data)
        assert digest == digest_bytes(data)
        assert len(digest) == 64
        assert store.get(digest) == data
        assert store.exists(digest)
        assert store.size(digest) == len(data)

    def test_put_is_idempotent(self, store: BlobStore) -> None:
        first = store.put(b"same")
        second = store.put(b"same")
        assert first == second
        assert list(store.iter_digests()).count(first) == 1

    def test_empty_blob(self, store: BlobStore) -> None:
        digest = store.put(b"")
        assert store.get(digest) == b""
        assert store.size(digest) == 0

    def test_missing_blob(self, store: BlobStore) -> None:
        digest = digest_bytes(b"never stored")
        assert not store.exists(digest)
        with pytest.raises(NotFoundError, match=f"blob {digest} is missing"):
            store.get(digest)
        with pytest.raises(NotFoundError):
            store.size(digest)

    def test_delete(self, store: BlobStore) -> None:
        digest = store.put(b"short-lived")
        store.delete(digest)
        assert not store.exists(digest)
        store.delete(digest)  # deleting an absent blob is fine
        assert digest not in set(store.iter_digests())

    def test_iter_digests_lists_exactly_what_was_put(self, store: BlobStore) -> None:
        digests = {store.put(f"blob {i}".encode()) for i in range(25)}
        assert set(store.iter_digests()) == digests

    def test_corruption_is_detected_and_names_the_blob(self, store: BlobStore) -> None:
        data = b"precious weights" * 64
        digest = store.put(data)
        flipped = bytearray(data)
        flipped[7] ^= 0x01
        self.corrupt(store, digest, bytes(flipped))
        with pytest.raises(CorruptBlobError, match=f"blob {digest} is corrupt"):
            store.get(digest)

    def test_read_and_view_are_verified_like_get(self, store: BlobStore) -> None:
        """The rebuild path's two reads: ``read`` (writable, may be kept) and ``view`` (only read, then dropped)."""
        data = b"delta planes" * 300
        digest = store.put(data)
        assert bytes(store.read(digest)) == data and bytes(store.view(digest)) == data
        empty = store.put(b"")
        assert bytes(store.read(empty)) == b"" and bytes(store.view(empty)) == b""
        missing = digest_bytes(b"never stored")
        for read in (store.read, store.view):
            with pytest.raises(NotFoundError, match=f"blob {missing} is missing"):
                read(missing)
        for read in (store.read, store.view):  # a blob not read before: no cached copy
            precious = read.__name__.encode() * 100
            digest = store.put(precious)
            self.corrupt(store, digest, b"\x00" + precious[1:])
            with pytest.raises(CorruptBlobError, match=f"blob {digest} is corrupt"):
                read(digest)

    def test_malformed_digest_is_rejected(self, store: BlobStore) -> None:
        for bad in ["../../etc/passwd", "abc", "Z" * 64]:
            with pytest.raises(ValueError, match="not a blob digest"):
                store.get(bad)

    def test_concurrent_puts_of_the_same_blob(self, store: BlobStore) -> None:
        data = bytes(range(256)) * 4096
        results: list[str] = []

        def put() -> None:
            results.append(store.put(data))

        threads = [threading.Thread(target=put) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert set(results) == {digest_bytes(data)}
        assert store.get(results[0]) == data

    def test_reopen_by_url_sees_the_same_blobs(self, store: BlobStore) -> None:
        digest = store.put(b"persisted")
        reopened = open_blob_store(store.url)
        assert reopened.get(digest) == b"persisted"

    def test_re_put_refreshes_the_age_and_ages_belong_to_one_store(self, store: BlobStore, other: BlobStore) -> None:
        """gc's grace period reads ``modified``: a push re-putting an old blob must make it young again,
        and a put into another store must not change this store's ages."""
        data = b"deduplicated component"
        digest = store.put(data)
        first = store.modified(digest)
        assert first is not None and abs(first - time.time()) < 60
        time.sleep(1.1)  # S3's LastModified has one-second resolution
        assert other.put(data) == digest
        assert store.modified(digest) == first
        assert store.put(data) == digest
        assert store.modified(digest) > first
        assert store.get(digest) == data
        assert store.modified(digest_bytes(b"absent")) is None

    def test_re_put_of_a_swept_blob_writes_it_again(self, store: BlobStore) -> None:
        """A blob gc removes just before a push's dedupe hit is rewritten, not an error."""
        data = b"swept between the check and the refresh" * 50
        digest = store.put(data)
        store.delete(digest)
        assert store.put(data) == digest
        assert store.get(digest) == data
        assert store.modified(digest) is not None
