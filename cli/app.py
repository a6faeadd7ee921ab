"""The ``tvstore`` command: thin Typer wrappers over :class:`tvstore.Registry`."""

from __future__ import annotations

import gc
import os
import sys
from typing import NoReturn, Optional

import typer

from tvstore.errors import TvstoreError
from tvstore.cli import bases, maintenance, serve, tokens, vectors
from tvstore.cli.merge import merge
from tvstore.cli.context import State
from tvstore.cli.output import err

app = typer.Typer(
    name="tvstore",
    help="A registry for task vectors: push fine-tunes as compressed deltas, pull them back, merge them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def configure(
    ctx: typer.Context,
    home: Optional[str] = typer.Option(None, "--home", envvar="TVSTORE_HOME", help="Registry folder (SQLite file + blobs). Default ~/.tvstore."),
    database_url: Optional[str] = typer.Option(None, "--database-url", envvar="TVSTORE_DATABASE_URL", help="SQLAlchemy URL, e.g. postgresql://user@host/db."),
    blob_url: Optional[str] = typer.Option(None, "--blob-url", envvar="TVSTORE_BLOB_URL", help="Blob store: a path, file://, or s3://bucket/prefix."),
    s3_endpoint: Optional[str] = typer.Option(None, "--s3-endpoint", envvar="AWS_ENDPOINT_URL", help="S3-compatible endpoint URL (MinIO, Ceph, R2, ...)."),
    remote: Optional[str] = typer.Option(None, "--remote", envvar="TVSTORE_REMOTE", help="Work through a `tvstore serve` server, e.g. http://host:8700."),
    token: Optional[str] = typer.Option(None, "--token", envvar="TVSTORE_TOKEN", help="Bearer token for --remote (see `tvstore token create`)."),
) -> None:
    ctx.obj = State(home, database_url, blob_url, s3_endpoint, remote, token)
    ctx.call_on_close(ctx.obj.close)  # before the process leaves (``leave`` skips what finalization would close)


app.add_typer(bases.app, name="base", help="Register and inspect base models.")
app.add_typer(maintenance.db_app, name="db", help="Database schema: upgrade, current revision.")
vectors.register(app)
app.command("merge")(merge)
maintenance.register(app)
app.add_typer(tokens.token_app, name="token", help="Tokens for a served registry: create, ls, revoke.")
app.command("audit")(tokens.audit)
app.command("serve")(serve.serve)


def fail(message: str, exit_code: int) -> int:
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return exit_code


def describe_os_error(exc: OSError) -> str:
    """``PermissionError(13, ..., '/x')`` -> ``/x: permission denied``: the file first, then why."""
    why = (exc.strerror or str(exc)).lower()
    return f"{exc.filename}: {why}" if exc.filename else why


#: gen-1 collections between full ones for a command (Python's default is 10)
FULL_COLLECTION_EVERY = 1000


def few_full_collections() -> None:
    """A command is short-lived, and the modules it imports (SQLAlchemy, then torch: ~220k objects) live
    as long as it does, yet each full collection scans them all: a pull paid several, ~0.1 s each.
    Frozen, the objects imported so far are skipped; the rest (imported lazily by the command) are
    scanned only after ``FULL_COLLECTION_EVERY`` young collections. Young garbage is collected as always."""
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)


def run() -> int:
    """The command's exit status: a ``TvstoreError`` becomes one line on stderr and its exit code.

    A bug's traceback is not caught here: it propagates, and Python prints it and tears down as usual.
    """
    few_full_collections()
    try:
        app()
    except SystemExit as exc:  # how Click ends every command, success included
        return exit_status(exc)
    except TvstoreError as exc:
        return fail(str(exc), exc.exit_code)
    except OSError as exc:  # the machine refused: a full disk, a folder we may not write, ...
        return fail(describe_os_error(exc), 1)
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    return 0


def exit_status(exc: SystemExit) -> int:
    """What Python would exit with for ``exc``: ``None`` is 0, a message is printed and is 1."""
    if exc.code is None or isinstance(exc.code, int):
        return exc.code or 0
    print(exc.code, file=sys.stderr)
    return 1


def leave(status: int) -> NoReturn:
    """Flush the output, then end the process without finalizing the interpreter.

    Finalization tears down every imported module (torch's and SQLAlchemy's are large) and was a sizeable
    share of a short command's time (`python -c 'import torch'` against the same with ``os._exit``). A
    finished command leaves nothing for it to do: the registry (database connections, S3 pools) is
    closed with Click's root context, files by their ``with`` blocks, and worker pools have joined.
    Output that cannot be written is still an error (one line, status 1; Python's own exit gave a
    traceback-like warning and 120).
    """
    try:
        sys.stdout.flush()
    except BrokenPipeError:  # the reader has gone (``tvstore ls | head``): nothing left to tell it
        pass
    except OSError as exc:
        status = fail(describe_os_error(exc), status or 1)  # as when the command's own writes fail
    try:
        sys.stderr.flush()
    except OSError:
        pass
    os._exit(status)


def main() -> NoReturn:
    """Entry point of the ``tvstore`` command."""
    leave(run())
