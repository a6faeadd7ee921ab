"""Tuning knobs of the S3 blob store, and the boto3 client they produce.

Kept apart from the store so the CLI can build settings from its flags and
the environment without importing boto3, and so every default is in one place.
Retries are botocore's own (``standard`` or ``adaptive`` mode): they already
back off with jitter on throttling (``SlowDown``), 5xx and dropped
connections, and honour a client-wide retry quota.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from tvstore.util.units import parse_size
from tvstore.errors import UsageError

MiB = 1024 * 1024
#: S3 allows at most this many parts in one multipart upload
MAX_PARTS = 10_000


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise UsageError(f"{name}={raw!r} is not an integer") from None


def _env_size(name: str, default: int) -> int:
    """A byte count such as ``64M`` or ``67108864``."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return parse_size(raw)
    except UsageError as exc:
        raise UsageError(f"{name}: {exc}") from None


@dataclass(frozen=True)
class S3Settings:
    """How an :class:`~tvstore.blobs.s3.S3BlobStore` talks to its endpoint.

    ``endpoint_url=None`` leaves the choice to boto3, which reads
    ``AWS_ENDPOINT_URL`` (and the profile) itself.
    """

    endpoint_url: str | None = None
    region: str | None = None
    #: blobs at least this large go up as multipart uploads
    multipart_threshold: int = 64 * MiB
    #: size of each part (raised automatically if a blob would need > 10,000 parts)
    part_size: int = 16 * MiB
    #: threads for parallel parts and for ``put_many``/``get_many``
    max_concurrency: int = 8
    retry_mode: str = "standard"
    max_attempts: int = 6
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    #: objects per ListObjectsV2 page (S3 caps it at 1000)
    list_page_size: int = 1000
    extra_client_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.retry_mode not in ("standard", "adaptive", "legacy"):
            raise UsageError(f"unknown S3 retry mode {self.retry_mode!r}: use standard or adaptive")
        if self.part_size <= 0 or self.multipart_threshold <= 0 or self.max_concurrency <= 0:
            raise UsageError("S3 part size, multipart threshold and concurrency must be positive")
        if self.max_attempts < 1:
            raise UsageError("S3 max_attempts must be at least 1")

    @classmethod
    def from_env(cls, **overrides: Any) -> S3Settings:
        """Defaults, then ``TVSTORE_S3_*`` / ``AWS_*`` variables, then explicit ``overrides``.

        ``AWS_MAX_ATTEMPTS`` and ``AWS_RETRY_MODE`` are honoured because a
        botocore ``Config`` passed explicitly would otherwise shadow them.
        """
        base = cls()
        values: dict[str, Any] = {
            "multipart_threshold": _env_size("TVSTORE_S3_MULTIPART_THRESHOLD", base.multipart_threshold),
            "part_size": _env_size("TVSTORE_S3_PART_SIZE", base.part_size),
            "max_concurrency": _env_int("TVSTORE_S3_MAX_CONCURRENCY", base.max_concurrency),
            "max_attempts": _env_int("AWS_MAX_ATTEMPTS", base.max_attempts),
            "retry_mode": os.environ.get("AWS_RETRY_MODE") or base.retry_mode,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def part_size_for(self, size: int) -> int:
        """The part size for a blob of ``size`` bytes, within S3's part-count limit."""
        return max(self.part_size, -(-size // MAX_PARTS))


def make_client(settings: S3Settings) -> Any:
    """A thread-safe boto3 S3 client configured with ``settings``."""
    import boto3
    from botocore.config import Config

    config = Config(
        # total_max_attempts counts the first try, as AWS_MAX_ATTEMPTS does (max_attempts would not)
        retries={"mode": settings.retry_mode, "total_max_attempts": settings.max_attempts},
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        # one pooled connection per worker thread, plus one for the caller
        max_pool_connections=settings.max_concurrency + 2,
    )
    session = boto3.session.Session()
    return session.client(
        "s3",
        endpoint_url=settings.endpoint_url,
        region_name=settings.region,
        config=config,
        **settings.extra_client_args,
    )
