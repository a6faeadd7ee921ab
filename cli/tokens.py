"""``tvstore token create|ls|revoke`` and ``tvstore audit``: access to a served registry.

Run against the registry directly by whoever administers it, or through
``--remote`` with an admin token.
"""

from __future__ import annotations

from typing import Optional

import typer

from tvstore.cli.context import registry
from tvstore.cli.output import emit_json, out, table
from tvstore.ops.tokens import TokenInfo
from tvstore.util.units import parse_duration

JSON = typer.Option(False, "--json", help="Machine-readable output.")
token_app = typer.Typer(no_args_is_help=True)


def _status(t: TokenInfo) -> str:
    return "revoked" if t.revoked else "active"


@token_app.command("create")
def create(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Who or what holds the token (shown in the audit log)."),
    scope: str = typer.Option(..., "--scope", help="read (ls, show, pull, merge --out), write (+ push, tag, pack, merge --save-as) or admin (+ rm, gc, bases, tokens)."),
    names: list[str] = typer.Option([], "--names", help="Only vectors whose name matches this pattern, e.g. 'team-a-*' (repeatable)."),
    expires: Optional[str] = typer.Option(None, "--expires", help="Lifetime, e.g. 30d or 12h (default: until revoked)."),
    json: bool = JSON,
) -> None:
    """Create a token; its secret is printed once, as the last word, and never stored."""
    info, secret = registry(ctx).create_token(name, scope, names, parse_duration(expires) if expires else None)
    if json:
        emit_json({"token": info.to_dict(), "secret": secret})
        return
    until = f"expires {info.expires_at}" if info.expires_at else "no expiry"
    grants = f", names {' '.join(info.names)}" if info.names else ""
    out.print(f"created token {info.name} (scope {info.scope}{grants}, {until}); secret, shown once: {secret}", highlight=False)


@token_app.command("ls")
def ls(ctx: typer.Context, json: bool = JSON) -> None:
    """List tokens (never their secrets)."""
    infos = registry(ctx).tokens()
    if json:
        emit_json([t.to_dict() for t in infos])
        return
    rows = [[t.name, t.scope, " ".join(t.names) or "*", t.created_at, t.expires_at or "-", _status(t)] for t in infos]
    table(None, ["name", "scope", "names", "created", "expires", "status"], rows)


@token_app.command("revoke")
def revoke(ctx: typer.Context, name: str = typer.Argument(...), json: bool = JSON) -> None:
    """Revoke a token: every request carrying it is refused from now on."""
    info = registry(ctx).revoke_token(name)
    emit_json(info.to_dict()) if json else out.print(f"revoked token {info.name}", highlight=False)


def audit(
    ctx: typer.Context,
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Only the newest N entries."),
    json: bool = JSON,
) -> None:
    """What was done through the server: when, by which token, to which ref."""
    entries = registry(ctx).audit(limit)
    if json:
        emit_json([e.to_dict() for e in entries])
        return
    table(None, ["at", "token", "action", "target"], [[e.at, e.token, e.action, e.target] for e in entries])
