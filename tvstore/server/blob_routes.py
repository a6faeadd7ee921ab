"""Blob bytes: which ones the server lacks, and moving them (presigned S3 URLs, or streamed here).

An upload streamed through the server is hashed before it is stored, so a
blob whose bytes do not match its digest is refused (422) and never lands.
Uploads through presigned URLs are hashed when the push commits instead.
A token narrowed to names reads only blobs a base or a vector it covers uses.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from tvstore.blobs.base import check_digest, digest_bytes
from tvstore.blobs.presign import presigned_url
from tvstore.errors import CorruptBlobError, ForbiddenError, UsageError
from tvstore.server.api import registry_of, body_of, run
from tvstore.server.auth import require

MAX_ASK = 10_000  # digests per "which are missing?" question


def _digest(text: str) -> str:
    try:
        return check_digest(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


async def missing(request: Request) -> JSONResponse:
    await require(request, "write", "push")
    digests = (await body_of(request)).get("digests")
    if not isinstance(digests, list) or len(digests) > MAX_ASK:
        raise UsageError(f"expected 'digests': a list of at most {MAX_ASK} blob digests")
    reg = registry_of(request)
    absent = await run(reg.missing_blobs, [_digest(d) for d in digests])
    upload = {d: presigned_url(reg.blobs, d, "PUT") for d in absent}
    return JSONResponse({"missing": absent, "upload": {d: u for d, u in upload.items() if u}})


async def put_blob(request: Request) -> JSONResponse:
    digest = _digest(request.path_params["digest"])
    await require(request, "write", "push")
    data = await request.body()
    actual = digest_bytes(data)
    if actual != digest:
        raise CorruptBlobError(digest, f"the uploaded {len(data)} bytes hash to {actual}; nothing was stored")
    await run(registry_of(request).blobs.put, data)
    return JSONResponse({"digest": digest, "size": len(data)})


async def get_blob(request: Request) -> Response:
    digest = _digest(request.path_params["digest"])
    token = await require(request, "read", "pull")
    reg = registry_of(request)
    if not await run(reg.may_read_blob, token, digest):
        raise ForbiddenError(f"reading blob {digest} (pull, merge, rebuild): token {token.name!r} is limited to "
                             f"names matching {', '.join(token.names)}, and no base or vector it covers uses this blob")
    url = presigned_url(reg.blobs, digest, "GET")
    if url is not None:
        return RedirectResponse(url, status_code=307)
    return Response(await run(reg.blobs.get, digest), media_type="application/octet-stream")


routes = [
    Route("/api/blobs/missing", missing, methods=["POST"]),
    Route("/api/blobs/{digest:path}", put_blob, methods=["PUT"]),
    Route("/api/blobs/{digest:path}", get_blob, methods=["GET"]),
]
