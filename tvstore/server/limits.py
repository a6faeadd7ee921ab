"""Request body limit, enforced on the declared length and on the bytes actually received."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tvstore.errors import TooLargeError


class BodyLimit:
    """ASGI middleware: a body over ``max_bytes`` is refused (413) before the endpoint sees it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self, size: int | str) -> TooLargeError:
        return TooLargeError(f"request body of {size} bytes is over this server's limit of {self.max_bytes} bytes")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _refuse(self._too_large(int(declared)), send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise self._too_large(f"more than {self.max_bytes}")
            return message

        await self.app(scope, counted, send)


async def _refuse(exc: TooLargeError, send: Send) -> None:
    import json

    body = json.dumps({"error": str(exc), "kind": type(exc).__name__}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
