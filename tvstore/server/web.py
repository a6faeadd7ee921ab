"""The web page: a searchable list of vectors and a page per vector, rendered on the server (Jinja2).

No JavaScript. Reading needs the read scope, like the API: a token pasted
into the login form is kept in an HTTP-only cookie, or ``--public-read``
opens the pages to everyone.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, quote

import yaml
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from tvstore.cli.output import fmt_float, fmt_ratio, human_bytes
from tvstore.errors import TvstoreError
from tvstore.ops.info import VectorInfo
from tvstore.server.api import registry_of, run
from tvstore.server.auth import COOKIE, require
from tvstore.server.errors import status_of
from tvstore.server.lineage_svg import layout
from tvstore.util.refs import parse_ref

_env = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=select_autoescape(["html"]))
_env.filters.update(bytes=human_bytes, ratio=fmt_ratio, num=fmt_float, ref_url=lambda ref: quote(ref, safe="@:"))


def _page(template: str, status: int = 200, **context: object) -> HTMLResponse:
    return HTMLResponse(_env.get_template(template).render(**context), status)


def _matches(info: VectorInfo, query: str) -> bool:
    """Case-insensitive substring search over what the list shows and the metadata."""
    fields = [info.name, info.base, str(info.codec.get("id", "")), *info.tags, *info.meta.keys(), *map(str, info.meta.values())]
    return any(query.lower() in f.lower() for f in fields)


async def _guarded(request: Request, render) -> Response:
    """Render a page, or the login form (401) / an error page for a refused or bad request."""
    try:
        return await render()
    except TvstoreError as exc:
        status = status_of(exc)
        if status == 401:
            return _page("login.html", 401, who="", message=str(exc))
        return _page("error.html", status, who="", message=str(exc))


async def index(request: Request) -> Response:
    async def render() -> Response:
        token = await require(request, "read", "ls")
        query = request.query_params.get("q", "").strip()
        infos = [i for i in await run(registry_of(request).list) if token.covers(i.name)]
        shown = [i for i in infos if _matches(i, query)] if query else infos
        return _page("index.html", who=token.name, vectors=shown, q=query)

    return await _guarded(request, render)


async def vector(request: Request) -> Response:
    async def render() -> Response:
        ref = request.path_params["ref"]
        token = await require(request, "read", "show", parse_ref(ref).name)
        reg = registry_of(request)
        info = await run(reg.show, ref)
        versions = await run(reg.list, info.name, True)
        tensors = await run(reg.tensors, info.ref)
        graph = layout(*await run(reg.lineage_nodes, info.ref))
        recipe = yaml.safe_dump(info.recipe, sort_keys=False) if info.recipe else None
        return _page("vector.html", who=token.name, info=info, versions=versions, tensors=tensors, graph=graph, recipe=recipe)

    return await _guarded(request, render)


async def login(request: Request) -> Response:
    if request.method == "GET":
        return _page("login.html", who="", message="")
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    secret = (form.get("token") or [""])[0].strip()
    try:
        await run(registry_of(request).authenticate, secret)
    except TvstoreError as exc:
        return _page("login.html", 401, who="", message=str(exc))
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(COOKIE, secret, httponly=True, samesite="strict", secure=request.url.scheme == "https")
    return response


async def logout(request: Request) -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE)
    return response


routes = [
    Route("/", index),
    Route("/v/{ref:path}", vector),
    Route("/login", login, methods=["GET", "POST"]),
    Route("/logout", logout),
]
