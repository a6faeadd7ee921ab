"""Local and in-memory blob stores against the shared contract."""

from __future__ import annotations

import os
import stat
import uuid
from pathlib import Path

import pytest

from blob_contract import BlobStoreContract
from tvstore.blobs import BlobStore, LocalBlobStore, MemoryBlobStore


class TestLocalBlobStore(BlobStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> LocalBlobStore:
        return LocalBlobStore(tmp_path / "blobs")

    def corrupt(self, store: BlobStore, digest: str, data: bytes) -> None:
        assert isinstance(store, LocalBlobStore)
        path = store.path(digest)
        os.chmod(path, 0o644)
        path.write_bytes(data)

    def test_layout_is_objects_prefix_rest_and_read_only(self, store: LocalBlobStore) -> None:
        digest = store.put(b"layout")
        path = store.root / "objects" / digest[:2] / digest[2:]
        assert path.read_bytes() == b"layout"
        assert stat.S_IMODE(path.stat().st_mode) == 0o444

    def test_no_temporary_files_left_behind(self, store: LocalBlobStore) -> None:
        store.put(b"x" * 10_000)
        leftovers = [p for p in store.objects.rglob("*") if p.name.startswith(".")]
        assert leftovers == []


class TestMemoryBlobStore(BlobStoreContract):
    @pytest.fixture
    def store(self) -> MemoryBlobStore:
        return MemoryBlobStore(uuid.uuid4().hex)

    def corrupt(self, store: BlobStore, digest: str, data: bytes) -> None:
        assert isinstance(store, MemoryBlobStore)
        store._blobs[digest] = data
