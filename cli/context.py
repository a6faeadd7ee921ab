"""What the top-level options resolve to, shared by every command."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import typer

from tvstore.cli.output import rich_progress
from tvstore.errors import UsageError
from tvstore.registry import Registry

if TYPE_CHECKING:  # imported by Registry.open for --remote only: a local command never loads the HTTP client
    from tvstore.remote import RemoteRegistry


@dataclass
class State:
    home: str | None
    database_url: str | None
    blob_url: str | None
    s3_endpoint: str | None
    remote: str | None = None
    token: str | None = None
    _registry: Registry | RemoteRegistry | None = field(default=None, repr=False)

    def registry(self) -> Registry | RemoteRegistry:
        """Opened on first use, so ``--help`` never touches a database; through a server with ``--remote``."""
        if self._registry is None:
            self._registry = Registry.open(
                self.home, self.database_url, self.blob_url, progress=rich_progress, s3_endpoint=self.s3_endpoint,
                remote=self.remote, token=self.token,
            )
        return self._registry

    def close(self) -> None:
        """Release the registry's connections (the database's, an S3 client's pools), if one was opened."""
        if self._registry is not None:
            self._registry.close()
            self._registry = None

    def local(self) -> Registry:
        """The registry itself, for commands an administrator runs beside the database (serve, init)."""
        if self.remote:
            raise UsageError(f"this command runs against the registry directly, not through --remote {self.remote}")
        registry = self.registry()
        assert isinstance(registry, Registry)
        return registry


def registry(ctx: typer.Context) -> Registry | RemoteRegistry:
    state: State = ctx.find_root().obj
    return state.registry()
