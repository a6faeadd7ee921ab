"""What the top-level options resolve to, shared by every command."""

from __future__ import annotations

from dataclasses import dataclass, field

import typer

from tvstore.cli.output import rich_progress
from tvstore.registry import Registry


@dataclass
class State:
    home: str | None
    database_url: str | None
    blob_url: str | None
    s3_endpoint: str | None
    _registry: Registry | None = field(default=None, repr=False)

    def registry(self) -> Registry:
        """Opened on first use, so ``--help`` never touches a database."""
        if self._registry is None:
            self._registry = Registry.open(
                self.home, self.database_url, self.blob_url, progress=rich_progress, s3_endpoint=self.s3_endpoint
            )
        return self._registry


def registry(ctx: typer.Context) -> Registry:
    state: State = ctx.find_root().obj
    return state.registry()
