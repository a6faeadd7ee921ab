"""Registry upkeep: init, gc, verify, and ``db upgrade``/``db current``."""

from __future__ import annotations

import typer

from tvstore.cli.context import registry
from tvstore.cli.output import emit_json, human_bytes, out
from tvstore.errors import SchemaError
from tvstore.ops.gc import DEFAULT_GRACE_SECONDS
from tvstore.util.units import parse_duration

JSON = typer.Option(False, "--json", help="Machine-readable output.")
db_app = typer.Typer(no_args_is_help=True)


def init(ctx: typer.Context, json: bool = JSON) -> None:
    """Create the registry (database at the newest schema, blob store)."""
    reg = registry(ctx)
    revision = reg.init()
    loc = reg.location
    if json:
        emit_json({"database": loc.database_url, "blobs": loc.blob_url, "revision": revision})
        return
    out.print(f"registry ready: database {loc.database_url}, blobs {loc.blob_url} (schema {revision})", highlight=False)


def gc(
    ctx: typer.Context,
    dry_run: bool = typer.Option(False, "--dry-run", help="Report what would be removed; remove nothing."),
    grace: str = typer.Option(f"{int(DEFAULT_GRACE_SECONDS)}s", "--grace", help="Keep unreferenced blobs younger than this (e.g. 1h, 0)."),
    json: bool = JSON,
) -> None:
    """Remove blobs nothing refers to (mark and sweep, with a grace period for pushes in flight)."""
    report = registry(ctx).gc(parse_duration(grace), dry_run)
    if json:
        emit_json(report.to_dict())
        return
    verb = "would remove" if dry_run else "removed"
    leftovers = f" and {report.temporaries} temporary files of interrupted writes" if report.temporaries else ""
    out.print(
        f"{verb} {len(report.swept)} blobs ({human_bytes(report.swept_bytes)}){leftovers}; "
        f"{report.referenced} referenced, {report.kept_young} unreferenced but younger than the grace period",
        highlight=False,
    )


def verify(ctx: typer.Context, json: bool = JSON) -> None:
    """Check the schema revision, every reference and the digest of every blob."""
    report = registry(ctx).verify()
    if json:
        emit_json(report.to_dict())
    else:
        out.print(f"schema {report.revision} (head {report.head}); {report.blobs_checked} blobs checked", highlight=False)
        for p in report.problems:
            out.print(f"[red]{p.issue}[/red] blob {p.digest}: used by {'; '.join(p.owners)}", highlight=False)
        if report.affected:
            out.print("affected: " + ", ".join(report.affected), highlight=False)
        out.print("registry is consistent" if report.ok else "[red]registry has problems[/red]")
    if not report.ok:
        raise typer.Exit(1)


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context, json: bool = JSON) -> None:
    """Migrate the database to the newest schema."""
    reg = registry(ctx)
    before, _ = reg.schema_revision()
    after = reg.upgrade()
    emit_json({"from": before, "to": after}) if json else out.print(f"schema {before} -> {after}")


@db_app.command("current")
def db_current(ctx: typer.Context, json: bool = JSON) -> None:
    """Print the database's schema revision and the newest this tvstore knows."""
    reg = registry(ctx)
    current, head = reg.schema_revision()
    try:
        reg.check_schema()
        problem = None
    except SchemaError as exc:
        problem = str(exc)
    if json:
        emit_json({"current": current, "head": head, "up_to_date": problem is None, "problem": problem})
        return
    out.print(f"current {current} (head {head})" + (f": {problem}" if problem else ""), highlight=False)


def register(app: typer.Typer) -> None:
    for command in (init, gc, verify):
        app.command(command.__name__)(command)
