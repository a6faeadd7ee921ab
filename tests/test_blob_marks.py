"""Local blobs are hashed once per file per machine on the rebuild path (``read``), always on ``get``.

A mark records the blob file's stat stamp when its bytes hashed to its digest;
any rewrite of the file changes the stamp and the next ``read`` hashes again.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tvstore.blobs import LocalBlobStore
from tvstore.errors import CorruptBlobError

DATA = bytes(range(256)) * 64


def aged(store: LocalBlobStore, digest: str) -> Path:
    """Make the blob file look written a minute ago (files younger than ``RACY_S`` are not marked)."""
    path = store.path(digest)
    old = path.stat().st_mtime_ns - 60 * 10**9
    os.utime(path, ns=(old, old))
    return path


def rewrite(path: Path, data: bytes, keep_stamp: bool = False) -> None:
    st = path.stat()
    path.chmod(0o644)
    with open(path, "r+b") as f:  # in place: same inode, same size
        f.write(data)
    if keep_stamp:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_read_is_verified_and_a_rewritten_blob_is_caught(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    digest = store.put(DATA)
    mark = tmp_path / "verified" / digest[:2] / digest[2:]
    assert bytes(store.read(digest)) == DATA and not mark.exists()  # too young to mark: hashed each time
    aged(store, digest)
    assert bytes(store.read(digest)) == DATA and mark.is_file()
    rewrite(store.path(digest), b"\xff" + DATA[1:])
    with pytest.raises(CorruptBlobError, match=f"blob {digest} is corrupt"):
        store.read(digest)
    with pytest.raises(CorruptBlobError):
        store.view(digest)
    with pytest.raises(CorruptBlobError):
        store.get(digest)


def test_get_hashes_even_where_a_mark_would_be_trusted(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    digest = store.put(DATA)
    aged(store, digest)
    assert bytes(store.read(digest)) == DATA
    rewrite(store.path(digest), b"\xff" + DATA[1:], keep_stamp=True)  # bit rot the stat cannot see
    assert bytes(store.read(digest)) != DATA  # what a mark cannot see: `tvstore verify` (get) is for that
    with pytest.raises(CorruptBlobError):
        store.get(digest)


def test_a_read_marks_an_old_blob_and_delete_drops_the_mark(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    digest = store.put(DATA)
    mark = tmp_path / "verified" / digest[:2] / digest[2:]
    aged(store, digest)
    assert not mark.exists()
    assert bytes(store.read(digest)) == DATA and mark.is_file()
    read_buffer = store.read(digest)
    assert not read_buffer.readonly  # a decoder may wrap it as a tensor without a copy
    assert store.view(digest).readonly  # a mapping of the blob file: decoders only read it
    store.delete(digest)
    assert not mark.exists() and list(store.iter_digests()) == []
