"""Content-addressed blob stores behind one protocol, opened by URL."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from tvstore.blobs.base import BlobStore, digest_bytes
from tvstore.blobs.local import LocalBlobStore
from tvstore.blobs.memory import MemoryBlobStore
from tvstore.errors import UsageError

__all__ = ["BlobStore", "LocalBlobStore", "MemoryBlobStore", "digest_bytes", "open_blob_store"]


def open_blob_store(url: str, *, s3_endpoint: str | None = None, cache: bool = True) -> BlobStore:
    """Open a store from ``file:///path``, a plain path, ``memory://name`` or ``s3://bucket/prefix``.

    ``s3_endpoint`` (the CLI's ``--s3-endpoint``) overrides ``AWS_ENDPOINT_URL``.
    Remote stores are wrapped in the local read-through cache unless ``cache``
    is false or ``TVSTORE_CACHE_DIR=off``.
    """
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        return LocalBlobStore(Path(parsed.path if parsed.scheme else url))
    if parsed.scheme == "memory":
        return MemoryBlobStore(parsed.netloc + parsed.path)
    if parsed.scheme == "s3":
        from tvstore.blobs.s3 import S3BlobStore  # boto3 is slow to import

        store = S3BlobStore.from_url(url, endpoint_url=s3_endpoint)
        return _cached(store) if cache else store
    raise UsageError(f"unsupported blob store URL {url!r}: use a path, file://, memory:// or s3://")


def _cached(remote: BlobStore) -> BlobStore:
    """``remote`` behind the local cache configured in the environment, if any."""
    from tvstore.blobs.cache import CachedBlobStore
    from tvstore.blobs.cache_config import cache_settings

    cache_dir, max_bytes = cache_settings()
    if cache_dir is None or max_bytes == 0:
        return remote
    return CachedBlobStore(remote, cache_dir, max_bytes)
