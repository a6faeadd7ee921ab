"""A ``TvstoreError`` becomes an HTTP status and a one-line JSON body the client turns back into it."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from tvstore import errors

_STATUS: list[tuple[type[errors.TvstoreError], int]] = [
    (errors.AuthError, 401),
    (errors.ForbiddenError, 403),
    (errors.NotFoundError, 404),
    (errors.AlreadyExistsError, 409),
    (errors.TooLargeError, 413),
    (errors.CorruptBlobError, 422),
    (errors.UsageError, 400),
    (errors.CodecError, 400),
    (errors.InvalidCheckpointError, 400),
    (errors.SchemaError, 503),
]


def status_of(exc: errors.TvstoreError) -> int:
    return next((status for cls, status in _STATUS if isinstance(exc, cls)), 500)


async def tvstore_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.TvstoreError)
    status = status_of(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": str(exc), "kind": type(exc).__name__}, status, headers=headers)
