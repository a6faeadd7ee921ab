"""Who is asking, and may they: bearer tokens (or the web page's cookie), scopes, name grants.

Every endpoint names the CLI command it serves, so a refusal tells the user
which command needed which scope, e.g. "`tvstore rm` needs an admin token".
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from tvstore.errors import AuthError, ForbiddenError
from tvstore.ops.tokens import TokenInfo

COOKIE = "tvstore_token"
ANONYMOUS = TokenInfo("anonymous", "read", [], "", None, False)


def secret_of(request: Request) -> str | None:
    """The bearer secret of a request: its ``Authorization`` header, else the web login cookie."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get(COOKIE) or None


async def identify(request: Request) -> TokenInfo:
    """The live token of the request; anonymous read access only with ``--public-read``."""
    secret = secret_of(request)
    if secret is None and request.app.state.settings.public_read:
        return ANONYMOUS
    return await run_in_threadpool(request.app.state.registry.authenticate, secret)


def _article(scope: str) -> str:
    return "an" if scope == "admin" else "a"


async def require(request: Request, scope: str, command: str, name: str | None = None) -> TokenInfo:
    """The request's token if it has ``scope`` (and a grant for ``name``), else 401/403 naming ``command``."""
    token = await identify(request)
    if not token.allows(scope):
        if token is ANONYMOUS:
            raise AuthError(f"`tvstore {command}` needs {_article(scope)} {scope} token: pass --token or set TVSTORE_TOKEN")
        raise ForbiddenError(
            f"`tvstore {command}` needs {_article(scope)} {scope} token; token {token.name!r} has scope {token.scope}"
        )
    if name is not None and not token.covers(name):
        raise ForbiddenError(
            f"`tvstore {command}` on {name!r}: token {token.name!r} is limited to names matching {', '.join(token.names)}"
        )
    return token
