"""Short-lived URLs that let a client move blob bytes straight to and from the bucket.

Only an S3 store can hand them out; for any other store ``presigned_url``
answers ``None`` and the server streams the bytes itself.
"""

from __future__ import annotations

from tvstore.blobs.base import BlobStore
from tvstore.blobs.cache import without_cache

PRESIGN_SECONDS = 900  # long enough for a slow upload of a large blob, short enough to be useless once leaked


def _s3(store: BlobStore):
    from tvstore.blobs.s3 import S3BlobStore

    inner = without_cache(store)
    return inner if isinstance(inner, S3BlobStore) else None


def can_presign(store: BlobStore) -> bool:
    """Whether clients move this store's bytes themselves (so the server must verify what they wrote)."""
    return _s3(store) is not None


def presigned_url(store: BlobStore, digest: str, method: str, expires: int = PRESIGN_SECONDS) -> str | None:
    """A ``GET`` or ``PUT`` URL for the blob ``digest``, or ``None`` if the store is not S3."""
    inner = _s3(store)
    if inner is None:
        return None
    action = {"GET": "get_object", "PUT": "put_object"}[method]
    params = {"Bucket": inner.bucket, "Key": inner.key(digest)}
    return inner._client.generate_presigned_url(action, Params=params, ExpiresIn=expires)
