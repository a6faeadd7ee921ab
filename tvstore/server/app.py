"""The ASGI app ``tvstore serve`` runs: JSON API, blob transfers and the web page, over one registry.

Each uvicorn worker calls :func:`create_app` and opens the registry it is
configured with (the environment, see ``tvstore.server.settings``); workers
share nothing but the database and the blob store, like any other clients.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware

from tvstore.errors import TvstoreError
from tvstore.ops import audit
from tvstore.registry import Registry
from tvstore.server import api, blob_routes, web
from tvstore.server.errors import tvstore_error
from tvstore.server.limits import BodyLimit
from tvstore.server.settings import ServeSettings


def create_app(registry: Registry | None = None, settings: ServeSettings | None = None) -> Starlette:
    """The app over ``registry`` (default: the one the environment names), checked to be at the newest schema."""
    settings = settings or ServeSettings.from_env()
    reg = registry or Registry.open()
    reg.check_schema()
    audit.install()  # every change a request makes commits with its audit entry

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        reg.close()

    app = Starlette(
        routes=api.routes + blob_routes.routes + web.routes,
        middleware=[Middleware(BodyLimit, max_bytes=settings.max_body)],
        exception_handlers={TvstoreError: tvstore_error},
        lifespan=lifespan,
    )
    app.state.registry = reg
    app.state.settings = settings
    return app
