"""A blob store in an S3-compatible bucket (AWS S3, MinIO, Ceph, R2).

Layout matches the local store: ``s3://bucket/prefix`` holds
``prefix/objects/ab/cdef…``. Content addressing makes every put idempotent, so
put-if-absent only saves bandwidth: a conditional PUT (``If-None-Match: *``)
where the server supports it, else a HEAD check first. Which of the two a
server speaks is detected on the first put and remembered.

A put that finds its blob already there still refreshes the object's
LastModified (a server-side self-copy, no upload), because gc's grace period
reads that time: an old, unreferenced blob that a push in flight is about to
reference must look young again, as the local store's re-put does.

Retries (throttling, 5xx, dropped connections) are botocore's; whatever is
left after them becomes a one-line ``TvstoreError``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote, urlparse

from tvstore.blobs.base import DIGEST_HEX_LEN, BlobStore, digest_bytes, fanout
from tvstore.blobs.s3_config import S3Settings, make_client
from tvstore.blobs.s3_errors import UNSUPPORTED_CONDITION_CODES, Where, error_code, http_status, translated
from tvstore.blobs.s3_multipart import upload_multipart
from tvstore.blobs.s3_reads import read_object
from tvstore.errors import NotFoundError, UsageError

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

#: how often a put retries when S3 reports a concurrent conditional write to the same key
CONFLICT_RETRIES = 5
#: CopyObject refuses sources larger than this; bigger blobs are refreshed by re-uploading
MAX_COPY_BYTES = 5 * 1024**3
_HEX = frozenset("0123456789abcdef")


class S3BlobStore(BlobStore):
    """Content-addressed blobs under ``prefix/objects/`` in one bucket."""

    is_remote = True

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        settings: S3Settings | None = None,
        client: Any = None,
    ) -> None:
        if not bucket:
            raise UsageError("an S3 blob store URL needs a bucket: s3://bucket/prefix")
        settings = settings or S3Settings.from_env()
        if endpoint_url:
            settings = replace(settings, endpoint_url=endpoint_url)
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.settings = settings
        self._client = client or make_client(settings)
        self._objects = f"{self.prefix}/objects/" if self.prefix else "objects/"
        self._conditional: bool | None = None  # unknown until the first small put
        self._bucket_ok = False
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._part_pool: ThreadPoolExecutor | None = None

    @classmethod
    def from_url(cls, url: str, *, endpoint_url: str | None = None, settings: S3Settings | None = None) -> S3BlobStore:
        """Open ``s3://bucket/prefix[?endpoint_url=…]``; an explicit ``endpoint_url`` wins."""
        parsed = urlparse(url)
        if parsed.scheme != "s3":
            raise UsageError(f"not an S3 URL: {url!r} (expected s3://bucket/prefix)")
        from_query = parse_qs(parsed.query).get("endpoint_url", [None])[0]
        return cls(parsed.netloc, parsed.path, endpoint_url=endpoint_url or from_query, settings=settings)

    # -- naming -------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """The endpoint actually in use (after boto3 resolved env and profile)."""
        return str(self._client.meta.endpoint_url)

    @property
    def url(self) -> str:  # type: ignore[override]
        """``s3://bucket/prefix``; the endpoint is added only when the environment would not supply it."""
        base = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        explicit = self.settings.endpoint_url
        if explicit and explicit != os.environ.get("AWS_ENDPOINT_URL"):
            return f"{base}?endpoint_url={quote(explicit, safe='')}"
        return base

    def key(self, digest: str) -> str:
        return f"{self._objects}{fanout(digest)}"

    def _where(self) -> Where:
        return Where(self.bucket, self.endpoint)

    # -- the protocol -------------------------------------------------------

    def put(self, data: bytes) -> str:
        digest = digest_bytes(data)
        key = self.key(digest)
        with self._request(f"put blob {digest}"):
            large = len(data) >= self.settings.multipart_threshold
            written = self._put_large(key, data) if large else self._put_small(key, data)
            if not written:
                self._refresh(key, data)
        return digest

    def _read(self, digest: str) -> bytes:
        with self._request(f"get blob {digest}"):
            data = read_object(
                self._client,
                self.bucket,
                self.key(digest),
                attempts=self.settings.max_attempts,
                part_size=self.settings.part_size,
                executor=self._executor("part"),
            )
        if data is None:
            raise self._missing(digest)
        return data

    def exists(self, digest: str) -> bool:
        return self._head(self.key(digest), f"check blob {digest}") is not None

    def size(self, digest: str) -> int:
        head = self._head(self.key(digest), f"size blob {digest}")
        if head is None:
            raise self._missing(digest)
        return int(head["ContentLength"])

    def delete(self, digest: str) -> None:
        with self._request(f"delete blob {digest}"):
            self._client.delete_object(Bucket=self.bucket, Key=self.key(digest))

    def iter_digests(self) -> Iterator[str]:
        paginator = self._client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.bucket,
            Prefix=self._objects,
            PaginationConfig={"PageSize": self.settings.list_page_size},
        )
        with self._request("list blobs"):
            for page in pages:
                for entry in page.get("Contents", []):
                    digest = self._digest_of(entry["Key"])
                    if digest is not None:
                        yield digest

    def put_many(self, datas: Iterable[bytes]) -> list[str]:
        return self._parallel(self.put, list(datas))

    def get_many(self, digests: Iterable[str]) -> dict[str, bytes]:
        unique = list(dict.fromkeys(digests))
        return dict(zip(unique, self._parallel(self.get, unique)))

    def close(self) -> None:
        for pool in (self._pool, self._part_pool):
            if pool is not None:
                pool.shutdown(wait=True)
        self._pool = self._part_pool = None
        close = getattr(self._client, "close", None)
        if close is not None:
            close()

    # -- helpers ------------------------------------------------------------

    def _request(self, action: str) -> Any:
        """Context for one user-level operation: bucket checked, errors translated."""
        self._check_bucket()
        return translated(self._where(), action)

    def _check_bucket(self) -> None:
        """Fail once, clearly, on a missing bucket: a HEAD on a key in it would just say 404.

        A 403 is let through: HeadBucket needs ``s3:ListBucket``, which a
        policy granting only object reads and writes lacks; the object
        requests themselves will say whether access is really denied.
        """
        if self._bucket_ok:
            return
        with translated(self._where(), "open"):
            try:
                self._client.head_bucket(Bucket=self.bucket)
            except Exception as exc:
                status = http_status(exc)
                if status == 404 or error_code(exc) in ("404", "NoSuchBucket"):
                    raise NotFoundError(
                        f"S3 bucket {self.bucket!r} does not exist at {self.endpoint} "
                        "(create it, or check TVSTORE_BLOB_URL and the S3 endpoint)"
                    ) from None
                if status != 403:
                    raise
                log.info("no permission to HeadBucket %s; assuming it exists", self.bucket)
        self._bucket_ok = True

    def _head(self, key: str, action: str) -> dict | None:
        with self._request(action):
            try:
                return self._client.head_object(Bucket=self.bucket, Key=key)
            except Exception as exc:
                if http_status(exc) == 404:
                    return None
                raise

    def _put_small(self, key: str, data: bytes) -> bool:
        """Upload unless present; ``True`` if this call wrote the object."""
        if self._conditional is not False:
            written = self._put_conditional(key, data)
            if written is not None:
                return written
        if self._head(key, "check before put") is not None:
            return False
        self._client.put_object(Bucket=self.bucket, Key=key, Body=data)
        return True

    def _put_conditional(self, key: str, data: bytes) -> bool | None:
        """Try ``If-None-Match: *``: written, already there, or ``None`` (use the HEAD fallback)."""
        for attempt in range(CONFLICT_RETRIES):
            try:
                self._client.put_object(Bucket=self.bucket, Key=key, Body=data, IfNoneMatch="*")
                self._conditional = True
                return True
            except Exception as exc:
                code, status = error_code(exc), http_status(exc)
                if code == "PreconditionFailed" or status == 412:
                    self._conditional = True
                    return False
                if code == "ConditionalRequestConflict" or status == 409:
                    time.sleep(0.05 * 2**attempt)  # a racing writer of the same bytes
                    continue
                if self._conditional is None and (code in UNSUPPORTED_CONDITION_CODES or status == 501):
                    log.info("%s rejects conditional PUT (%s %s); using HEAD checks", self.endpoint, status, code)
                    self._conditional = False
                    return None
                raise
        return None  # still conflicting: settle it with HEAD + put

    def _refresh(self, key: str, data: bytes) -> None:
        """Make an existing object's LastModified now, so gc's grace period covers this push."""
        if len(data) > MAX_COPY_BYTES:
            self._client.put_object(Bucket=self.bucket, Key=key, Body=data)
            return
        try:
            self._client.copy_object(
                Bucket=self.bucket,
                Key=key,
                CopySource={"Bucket": self.bucket, "Key": key},
                MetadataDirective="REPLACE",  # S3 refuses a self-copy that changes nothing
                Metadata={"tvstore-refreshed": str(int(time.time()))},
            )
        except Exception as exc:
            if http_status(exc) != 404:
                raise
            self._client.put_object(Bucket=self.bucket, Key=key, Body=data)  # swept meanwhile: write it again

    def modified(self, digest: str) -> float | None:
        """LastModified of the object (POSIX seconds), ``None`` if absent: gc's grace period reads it."""
        head = self._head(self.key(digest), f"date blob {digest}")
        return None if head is None else head["LastModified"].timestamp()

    def _put_large(self, key: str, data: bytes) -> bool:
        if self._head(key, "check before multipart put") is not None:
            return False
        return upload_multipart(
            self._client,
            self.bucket,
            key,
            data,
            part_size=self.settings.part_size_for(len(data)),
            executor=self._executor("part"),
            if_none_match=self._conditional is True,
        )

    def _digest_of(self, key: str) -> str | None:
        rest = key[len(self._objects):]
        digest = rest[:2] + rest[3:]
        if len(rest) != DIGEST_HEX_LEN + 1 or rest[2:3] != "/" or not set(digest) <= _HEX:
            return None  # not a blob (a stray upload, someone else's file)
        return digest

    def _parallel(self, fn: Callable[[T], R], items: list[T]) -> list[R]:
        if len(items) <= 1:
            return [fn(item) for item in items]
        self._check_bucket()
        return list(self._executor("blob").map(fn, items))

    def _executor(self, kind: str) -> ThreadPoolExecutor:
        """Separate pools for whole blobs and for parts, so a blob never waits on its own pool."""
        with self._lock:
            attr = "_pool" if kind == "blob" else "_part_pool"
            pool = getattr(self, attr)
            if pool is None:
                pool = ThreadPoolExecutor(self.settings.max_concurrency, thread_name_prefix=f"tvstore-s3-{kind}")
                setattr(self, attr, pool)
            return pool

    def __repr__(self) -> str:
        return f"S3BlobStore({self.url!r}, endpoint={self.endpoint!r})"
