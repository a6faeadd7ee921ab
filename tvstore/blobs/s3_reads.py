"""Reading one object's bytes: in parallel byte ranges, surviving dropped connections.

The first request asks for the first ``part_size`` bytes; its Content-Range
tells the object's size, and a large object's remaining ranges are fetched in
parallel (one connection rarely fills a link to S3). A small object arrives
whole in that first request, so it costs nothing extra.

botocore retries a GET only until the response headers arrive; the body is
streamed afterwards, outside its retry loop. A connection cut while a body is
read (``IncompleteReadError``, ``ResponseStreamingError``, a read timeout)
would otherwise fail a pull, so each ranged GET is retried here with the same
bounded, jittered backoff.
"""

from __future__ import annotations

import random
import time
from concurrent.futures import Executor
from typing import Any

from tvstore.blobs.s3_errors import error_code, http_status
from tvstore.blobs.s3_multipart import part_ranges

#: upper bound of one backoff sleep between body re-reads
MAX_BACKOFF_S = 5.0


class ShortRead(Exception):
    """A range came back with fewer bytes than asked for."""


def _streaming_errors() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import (
        ConnectionClosedError,
        IncompleteReadError,
        ReadTimeoutError,
        ResponseStreamingError,
    )
    from urllib3.exceptions import ProtocolError

    return (IncompleteReadError, ResponseStreamingError, ReadTimeoutError, ConnectionClosedError,
            ProtocolError, ShortRead)


def read_object(client: Any, bucket: str, key: str, *, attempts: int, part_size: int,
                executor: Executor) -> bytes | None:
    """The object's bytes, or ``None`` if there is no such key."""
    first = _fetch(client, bucket, key, attempts, (0, part_size))
    if first is None:
        return None
    head, total = first
    if total is None or len(head) >= total:
        return head
    futures = [
        executor.submit(_fetch, client, bucket, key, attempts, span)
        for span in part_ranges(total, part_size)[1:]
    ]
    rest = [future.result() for future in futures]
    if any(part is None for part in rest):
        return None  # deleted while we read it
    return b"".join([head, *(part[0] for part in rest if part is not None)])


def _fetch(client: Any, bucket: str, key: str, attempts: int,
           span: tuple[int, int]) -> tuple[bytes, int | None] | None:
    """Bytes ``[start, end)`` and the object's total size (``None`` if the server ignored Range)."""
    retryable = _streaming_errors()
    start, end = span
    for attempt in range(1, attempts + 1):
        response = _get(client, bucket, key, f"bytes={start}-{end - 1}")
        if response is None:
            return None
        try:
            body = response["Body"].read()
            total = _total_size(response)
            if total is not None and len(body) != min(end, total) - start:
                raise ShortRead(f"{key}: asked for bytes {start}-{end - 1} of {total}, got {len(body)}")
            return body, total
        except retryable:
            if attempt == attempts:
                raise
            time.sleep(min(MAX_BACKOFF_S, random.random() * 2 ** (attempt - 1)))
        finally:
            response["Body"].close()
    raise AssertionError("unreachable")


def _get(client: Any, bucket: str, key: str, byte_range: str) -> dict | None:
    try:
        return client.get_object(Bucket=bucket, Key=key, Range=byte_range)
    except Exception as exc:
        if http_status(exc) == 404:
            return None
        if http_status(exc) == 416 or error_code(exc) == "InvalidRange":
            return client.get_object(Bucket=bucket, Key=key)  # an empty object has no byte 0
        raise


def _total_size(response: dict) -> int | None:
    """The size after the slash of ``Content-Range: bytes 0-99/1234``; ``None`` for a whole-object 200."""
    content_range = response.get("ContentRange")
    if not content_range or "/" not in content_range:
        return None
    total = content_range.rsplit("/", 1)[1]
    return int(total) if total.isdigit() else None
