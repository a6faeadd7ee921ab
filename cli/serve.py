"""``tvstore serve``: put an HTTP server (uvicorn workers) in front of this registry."""

from __future__ import annotations

import os

import typer

from tvstore.cli.output import err
from tvstore.util.units import parse_size


def serve(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0 for every one)."),
    port: int = typer.Option(8700, "--port", min=0, max=65535),
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes (share only the database and the bucket)."),
    public_read: bool = typer.Option(False, "--public-read", help="Let anyone read (ls, show, pull, the web page) without a token."),
    max_body: str = typer.Option("2GB", "--max-body", help="Largest request body accepted (a blob upload, a push's metadata)."),
    log_level: str = typer.Option("warning", "--log-level", help="uvicorn log level (info shows each request; never a token)."),
) -> None:
    """Serve the registry over HTTP: JSON API for `--remote` clients and a web page."""
    import uvicorn

    from tvstore.server.settings import ServeSettings

    state = ctx.find_root().obj
    reg = state.local()
    reg.check_schema()
    settings = ServeSettings(public_read, parse_size(max_body))
    loc = reg.location
    # workers are fresh processes: they learn the registry and the settings from the environment
    os.environ.update({"TVSTORE_DATABASE_URL": loc.database_url, "TVSTORE_BLOB_URL": loc.blob_url, **settings.to_env()})
    if state.s3_endpoint:
        os.environ["AWS_ENDPOINT_URL"] = state.s3_endpoint
    reg.close()
    err.print(f"serving {loc.database_url} + {loc.blob_url} on http://{host}:{port} ({workers} worker(s))", highlight=False)
    uvicorn.run("tvstore.server.app:create_app", factory=True, host=host, port=port, workers=workers, log_level=log_level)
