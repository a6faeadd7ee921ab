"""Content-addressed blob stores behind one protocol, opened by URL."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from tvstore.blobs.base import BlobStore, digest_bytes
from tvstore.blobs.local import LocalBlobStore
from tvstore.blobs.memory import MemoryBlobStore
from tvstore.errors import UsageError

__all__ = ["BlobStore", "LocalBlobStore", "MemoryBlobStore", "digest_bytes", "open_blob_store"]


def open_blob_store(url: str) -> BlobStore:
    """Open a store from ``file:///path``, a plain path, ``memory://name`` or ``s3://bucket/prefix``."""
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        return LocalBlobStore(Path(parsed.path if parsed.scheme else url))
    if parsed.scheme == "memory":
        return MemoryBlobStore(parsed.netloc + parsed.path)
    if parsed.scheme == "s3":
        from tvstore.blobs.s3 import S3BlobStore  # boto3 is slow to import

        return S3BlobStore.from_url(url)
    raise UsageError(f"unsupported blob store URL {url!r}: use a path, file://, memory:// or s3://")
