"""A fault-injecting HTTP proxy for tests, in front of the moto S3 server.

It forwards requests verbatim (Host header included, so SigV4 signatures stay
valid) and, when a rule says so, answers instead with a 500, a 503
``SlowDown``, a 501, a 403, drops the connection (before or after the
server acted on the request), or cuts a response body short.
Rules fire for the next N matching requests or for a random fraction of them
(seeded, so a failing run can be repeated). Threaded and loopback-only.
"""

from __future__ import annotations

import http.client
import random
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "trailer",
              "upgrade", "expect", "content-length"}

#: action -> (status, S3 error code) for the actions that answer with an error document
ERROR_ACTIONS = {
    "500": (500, "InternalError"),
    "503": (503, "SlowDown"),
    "501": (501, "NotImplemented"),
    "403": (403, "AccessDenied"),
    "404-upload": (404, "NoSuchUpload"),
}
#: drop: close without forwarding; lose-reply: forward, then close without answering
#: (the server acted, the client cannot know); truncate: forward, cut the body short
ACTIONS = frozenset({*ERROR_ACTIONS, "drop", "lose-reply", "truncate"})


@dataclass(frozen=True)
class Request:
    """What a rule can match on."""

    method: str
    path: str
    headers: dict[str, str]

    @property
    def query(self) -> str:
        return urlparse(self.path).query


Matcher = Callable[[Request], bool]


@dataclass
class Rule:
    action: str
    remaining: int | None  # None: no limit
    fraction: float = 1.0
    match: Matcher | None = None

    def fires(self, request: Request, rng: random.Random) -> bool:
        if self.remaining == 0 or (self.match is not None and not self.match(request)):
            return False
        if self.fraction < 1.0 and rng.random() >= self.fraction:
            return False
        if self.remaining is not None:
            self.remaining -= 1
        return True


@dataclass
class Seen:
    request: Request
    fault: str | None


@dataclass
class FaultProxy:
    """Start with ``with FaultProxy(upstream) as proxy:``; point clients at ``proxy.endpoint``."""

    upstream: str
    seed: int = 0
    rules: list[Rule] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        up = urlparse(self.upstream)
        self._upstream = (up.hostname or "127.0.0.1", up.port or 80)
        self._lock = threading.Lock()
        self._rng = random.Random(self.seed)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- configuring faults -------------------------------------------------

    def fail_next(self, n: int, action: str = "503", match: Matcher | None = None) -> None:
        """The next ``n`` matching requests get ``action``."""
        self._add(Rule(action, n, 1.0, match))

    def fail_fraction(self, fraction: float, action: str = "503", match: Matcher | None = None) -> None:
        """Each matching request gets ``action`` with probability ``fraction``, until cleared."""
        self._add(Rule(action, None, fraction, match))

    def down(self, action: str = "drop") -> None:
        """Every request fails (connection dropped by default) until :meth:`clear`."""
        self._add(Rule(action, None))

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def faults(self, action: str | None = None) -> int:
        """How many requests got a fault (of ``action``, if given)."""
        with self._lock:
            return sum(1 for s in self.seen if s.fault and (action is None or s.fault == action))

    def _add(self, rule: Rule) -> None:
        if rule.action not in ACTIONS:
            raise ValueError(f"unknown fault {rule.action!r}; choose from {sorted(ACTIONS)}")
        with self._lock:
            self.rules.append(rule)

    def _decide(self, request: Request) -> str | None:
        with self._lock:
            fault = next((r.action for r in self.rules if r.fires(request, self._rng)), None)
            self.seen.append(Seen(request, fault))
            return fault


def _handler_for(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
            pass

        def do_any(self) -> None:
            body = self._read_body()
            request = Request(self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
            fault = proxy._decide(request)
            if fault == "drop":
                self._drop()
            elif fault in ERROR_ACTIONS:
                self._error(*ERROR_ACTIONS[fault])
            else:
                self._forward(body, fault)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_any

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                return self._read_chunked()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _read_chunked(self) -> bytes:
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()

        def _drop(self) -> None:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        def _error(self, status: int, code: str) -> None:
            payload = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                       f"<Message>injected by fault proxy</Message></Error>").encode()
            self.send_response_only(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        def _forward(self, body: bytes, fault: str | None) -> None:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            if body or self.command in ("PUT", "POST"):
                headers["Content-Length"] = str(len(body))
            conn = http.client.HTTPConnection(*proxy._upstream, timeout=60)
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                payload = response.read()
                if fault == "lose-reply":
                    self._drop()
                    return
                self.send_response_only(response.status, response.reason)
                for name, value in response.getheaders():
                    if name.lower() not in HOP_BY_HOP:
                        self.send_header(name, value)
                length = response.getheader("Content-Length") if self.command == "HEAD" else str(len(payload))
                self.send_header("Content-Length", length or "0")
                self.end_headers()
                if self.command == "HEAD":
                    return
                if fault == "truncate" and len(payload) > 1:
                    self.wfile.write(payload[: len(payload) // 2])
                    self.wfile.flush()
                    self._drop()
                    return
                self.wfile.write(payload)
            finally:
                conn.close()

    return Handler
