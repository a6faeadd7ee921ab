"""Reading one object's bytes, surviving a connection that drops mid-body.

botocore retries a GET only until the response headers arrive; the body is
streamed afterwards, outside its retry loop. A connection cut while the body
is read (``IncompleteReadError``, ``ResponseStreamingError``, a read timeout)
would otherwise surface as a failed pull, so the whole GET is retried here
with the same bounded, jittered backoff.
"""

from __future__ import annotations

import random
import time
from typing import Any

from tvstore.blobs.s3_errors import http_status

#: upper bound of one backoff sleep between body re-reads
MAX_BACKOFF_S = 5.0


def _streaming_errors() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import (
        ConnectionClosedError,
        IncompleteReadError,
        ReadTimeoutError,
        ResponseStreamingError,
    )
    from urllib3.exceptions import ProtocolError

    return (IncompleteReadError, ResponseStreamingError, ReadTimeoutError, ConnectionClosedError, ProtocolError)


def read_object(client: Any, bucket: str, key: str, attempts: int) -> bytes | None:
    """The object's bytes, or ``None`` if there is no such key."""
    retryable = _streaming_errors()
    for attempt in range(1, attempts + 1):
        try:
            response = client.get_object(Bucket=bucket, Key=key)
        except Exception as exc:
            if http_status(exc) == 404:
                return None
            raise
        try:
            return response["Body"].read()
        except retryable:
            if attempt == attempts:
                raise
            time.sleep(min(MAX_BACKOFF_S, random.random() * 2 ** (attempt - 1)))
        finally:
            response["Body"].close()
    raise AssertionError("unreachable")
