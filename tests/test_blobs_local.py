"""Local and in-memory blob stores against the shared contract."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from blob_contract import BlobStoreContract
from tvstore.blobs import BlobStore, LocalBlobStore, MemoryBlobStore


class TestLocalBlobStore(BlobStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> LocalBlobStore:
        return LocalBlobStore(tmp_path / "blobs")

    @pytest.fixture
    def other(self, tmp_path: Path) -> LocalBlobStore:
        return LocalBlobStore(tmp_path / "other")

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


    def test_re_put_of_another_users_blob_in_a_shared_folder(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        """Only a file's owner may touch a read-only file's times: another user's dedupe hit
        rewrites the blob (same bytes, a young file of its own) instead of failing."""
        shared = Path(tempfile.mkdtemp(prefix="tvstore-shared-"))  # pytest's tmp folders are root-only
        try:
            data = b"a base tensor both users push" * 100
            digest = LocalBlobStore(shared).put(data)
            for folder in (shared, shared / "objects", shared / "objects" / digest[:2]):
                os.chmod(folder, 0o777)  # a team folder: every member may add files
            path = LocalBlobStore(shared).path(digest)
            os.utime(path, (1_000_000, 1_000_000))  # an old blob, as gc would find it
            script = f"from tvstore.blobs import LocalBlobStore; print(LocalBlobStore({str(shared)!r}).put({data!r}))"
            done = subprocess.run(
                ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-c", script],
                capture_output=True, text=True, timeout=60,
            )
            assert (done.returncode, done.stderr) == (0, "")
            assert done.stdout.strip() == digest
            st = path.stat()
            assert st.st_uid == pwd.getpwnam("nobody").pw_uid
            assert abs(st.st_mtime - time.time()) < 60
            assert stat.S_IMODE(st.st_mode) == 0o444
            assert path.read_bytes() == data
        finally:
            shutil.rmtree(shared)


class TestMemoryBlobStore(BlobStoreContract):
    @pytest.fixture
    def store(self) -> MemoryBlobStore:
        return MemoryBlobStore(uuid.uuid4().hex)

    @pytest.fixture
    def other(self) -> MemoryBlobStore:
        return MemoryBlobStore(uuid.uuid4().hex)

    def corrupt(self, store: BlobStore, digest: str, data: bytes) -> None:
        assert isinstance(store, MemoryBlobStore)
        store._blobs[digest] = data
