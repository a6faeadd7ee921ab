"""The HTTP client every remote call goes through: auth header, retries, one-line errors.

The server answers errors as ``{"error": "...", "kind": "..."}``; they come
back here as the same ``TvstoreError`` subclass a local registry raises, so
the CLI prints them the same way. Requests that are safe to repeat (reads,
content-addressed blob puts) are retried on dropped connections and 502-504.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from tvstore import errors
from tvstore.errors import TvstoreError

RETRIES = 4
RETRY_STATUS = frozenset({502, 503, 504})
#: a bucket behind a presigned URL: S3 asks clients to retry its InternalError (500) too, as boto3 does
BUCKET_RETRY_STATUS = RETRY_STATUS | {500}
TIMEOUT = httpx.Timeout(300.0, connect=10.0)
_BY_KIND = {
    "UsageError": errors.UsageError, "CodecError": errors.CodecError, "NotFoundError": errors.NotFoundError,
    "AlreadyExistsError": errors.AlreadyExistsError, "AuthError": errors.AuthError,
    "ForbiddenError": errors.ForbiddenError, "TooLargeError": errors.TooLargeError,
    "InvalidCheckpointError": errors.InvalidCheckpointError, "SchemaError": errors.SchemaError,
}


class Client:
    """One server: ``url`` like ``http://host:8700``, ``token`` the bearer secret (or ``None``)."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=TIMEOUT)
        self.plain = httpx.Client(timeout=TIMEOUT)  # presigned URLs: no bearer token leaves for the bucket

    def close(self) -> None:
        self.http.close()
        self.plain.close()

    def call(self, method: str, path: str, *, retry: bool | None = None, **kwargs: Any) -> httpx.Response:
        """One API request; raises the server's error as a ``TvstoreError``."""
        return checked(self.send(self.http, method, path, retry, **kwargs))

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.call(method, path, **kwargs).json()

    def send(self, http: httpx.Client, method: str, url: str, retry: bool | None,
             statuses: frozenset[int] = RETRY_STATUS, **kwargs: Any) -> httpx.Response:
        """``http.request`` with retries for idempotent requests (GET/PUT/DELETE unless told otherwise),
        on dropped connections and the ``statuses`` that mean "try again"."""
        attempts = RETRIES if (retry if retry is not None else method in ("GET", "PUT", "HEAD", "DELETE")) else 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = http.request(method, url, **kwargs)
            except httpx.TransportError as exc:
                if last:
                    raise TvstoreError(f"cannot reach {self.url}: {type(exc).__name__}: {exc}") from None
            else:
                if response.status_code not in statuses or last:
                    return response
            time.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")


def checked(response: httpx.Response) -> httpx.Response:
    """``response`` if it succeeded, else its error raised as the matching ``TvstoreError``."""
    if response.status_code < 400:
        return response
    try:
        body = response.json()
        message, kind = body["error"], body.get("kind")
    except (ValueError, KeyError, TypeError):
        message, kind = f"HTTP {response.status_code} from {response.request.url}: {response.text[:200]!r}", None
    cls = _BY_KIND.get(kind or "", _BY_STATUS.get(response.status_code, TvstoreError))
    raise cls(message)


_BY_STATUS = {401: errors.AuthError, 403: errors.ForbiddenError, 404: errors.NotFoundError,
              409: errors.AlreadyExistsError, 413: errors.TooLargeError, 400: errors.UsageError}
