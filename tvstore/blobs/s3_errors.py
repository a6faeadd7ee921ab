"""Turn botocore's exceptions into one-line ``TvstoreError``s.

botocore has already retried by the time an exception reaches us, so what is
left is final: a missing bucket, bad credentials, or an endpoint that stayed
down. The user gets a message naming the bucket and the endpoint, never a raw
botocore traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tvstore.errors import NotFoundError, TvstoreError

THROTTLING_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
                              "TooManyRequestsException", "RequestThrottled"})
DENIED_CODES = frozenset({"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
                          "InvalidToken", "AllAccessDisabled"})
#: codes an S3-compatible server answers with when it does not understand ``If-None-Match`` on PUT
UNSUPPORTED_CONDITION_CODES = frozenset({"NotImplemented", "InvalidArgument", "InvalidRequest",
                                         "InvalidHeader", "UnsupportedHeader"})


class S3Error(TvstoreError):
    """An S3 request failed for a reason retrying will not fix."""


class S3UnavailableError(S3Error):
    """The S3 endpoint stayed unreachable, throttled or failing through every retry."""


@dataclass(frozen=True)
class Where:
    """What a failing request was aimed at, for the message."""

    bucket: str
    endpoint: str

    def __str__(self) -> str:
        return f"bucket {self.bucket!r} at {self.endpoint}"


def error_code(exc: BaseException) -> str:
    """The S3 error code of a ``ClientError`` (``""`` for anything else)."""
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def http_status(exc: BaseException) -> int:
    """The HTTP status of a ``ClientError`` (0 for anything else)."""
    response = getattr(exc, "response", None) or {}
    return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def attempts(exc: BaseException) -> int:
    """How many attempts botocore made before giving up (1 if unknown)."""
    response = getattr(exc, "response", None) or {}
    return int(response.get("ResponseMetadata", {}).get("RetryAttempts", 0) or 0) + 1


def translate(exc: BaseException, where: Where, action: str) -> TvstoreError:
    """The ``TvstoreError`` that explains ``exc`` to a user."""
    from botocore.exceptions import (
        ClientError,
        ConnectionError as BotoConnectionError,
        HTTPClientError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    if isinstance(exc, TvstoreError):
        return exc
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return S3Error(f"cannot {action} in {where}: no usable AWS credentials ({exc})")
    if isinstance(exc, (BotoConnectionError, HTTPClientError, *_stream_errors())):
        return S3UnavailableError(f"cannot {action} in {where}: endpoint unreachable after retries ({exc})")
    if not isinstance(exc, ClientError):
        return S3Error(f"cannot {action} in {where}: {type(exc).__name__}: {exc}")
    code, status = error_code(exc), http_status(exc)
    if code == "NoSuchBucket":
        return NotFoundError(f"S3 {where} does not exist (create it, or check TVSTORE_BLOB_URL / the endpoint)")
    if code in DENIED_CODES or status == 403:
        return S3Error(f"access denied to {where} ({code or status}): check the AWS credentials")
    if code in THROTTLING_CODES or status >= 500:
        return S3UnavailableError(
            f"cannot {action} in {where}: the endpoint kept failing ({status} {code}) "
            f"after {attempts(exc)} attempts"
        )
    return S3Error(f"cannot {action} in {where}: {status} {code}: {exc}")


@contextmanager
def translated(where: Where, action: str) -> Iterator[None]:
    """Re-raise any botocore failure inside the block as a ``TvstoreError``."""
    try:
        yield
    except TvstoreError:
        raise
    except Exception as exc:  # botocore raises many unrelated classes
        if not _is_boto(exc):
            raise
        raise translate(exc, where, action) from exc


def _is_boto(exc: BaseException) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError

    return isinstance(exc, (BotoCoreError, ClientError, *_stream_errors()))


def _stream_errors() -> tuple[type[BaseException], ...]:
    """urllib3's own errors, which can escape botocore while a body is streamed."""
    from urllib3.exceptions import HTTPError

    return (HTTPError,)
