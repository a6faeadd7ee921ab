"""What the top-level options resolve to, shared by every command."""

from __future__ import annotations

import os
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
            if self.s3_endpoint:
                os.environ["AWS_ENDPOINT_URL"] = self.s3_endpoint  # boto3 reads it
            self._registry = Registry.open(self.home, self.database_url, self.blob_url, progress=rich_progress)
        return self._registry


def registry(ctx: typer.Context) -> Registry:
    state: State = ctx.find_root().obj
    return state.registry()
