"""A registry with vectors in it, and the one check every refusal must pass.

A refusal is exactly one ``error: ...`` line on stderr, the expected exit
code (2 for misuse), nothing on stdout, and a registry unchanged: the same
vectors, versions and bases as before (and no output folder, for commands
that write one).
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def ready(cli, registry, tiny):
    """A registry holding base ``bert`` and vectors ``good`` and ``other`` (set up through the API, probed through the CLI)."""
    registry.add_base("bert", tiny.base)
    registry.push("good", tiny.finetunes["alpha"], base="bert")
    registry.push("other", tiny.finetunes["beta"], base="bert")
    cli.registry = registry
    return cli


def snapshot(cli) -> tuple:
    reg = cli.registry
    return [v.to_dict() for v in reg.list(all_versions=True)], [b.to_dict() for b in reg.bases()]


def assert_refused(cli, args: tuple, message: str, *, expect: int = 2, out: Path | None = None) -> None:
    """``tvstore ARGS`` prints exactly ``error: MESSAGE``, exits ``expect`` and changes nothing."""
    before = snapshot(cli)
    proc = cli(*args, expect=expect)
    assert proc.stderr == f"error: {message}\n"
    assert proc.stdout == ""
    assert snapshot(cli) == before
    if out is not None:
        assert not out.exists()
