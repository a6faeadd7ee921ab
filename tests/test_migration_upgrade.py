"""A registry created at every earlier schema revision, with data in it, upgrades to head losing nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from safetensors.torch import load_file
from sqlalchemy import inspect

from test_registry import assert_bit_equal
from tvstore import Registry
from tvstore.db.migrate import alembic_config
from tvstore.errors import SchemaError


def revisions(reg: Registry) -> list[str]:
    """Every revision from the first to head."""
    script = ScriptDirectory.from_config(alembic_config(reg.engine))
    return [s.revision for s in reversed(list(script.walk_revisions()))]


def test_revisions_form_one_line() -> None:
    reg = Registry.open(database_url="sqlite://", blob_url="memory://revisions")
    assert revisions(reg)[:2] == ["0001", "0002"]
    reg.close()


@pytest.mark.parametrize("start", ["0001"])
def test_upgrade_from_an_earlier_revision_keeps_everything(database_url: str, tiny, cli, tmp_path: Path, start: str) -> None:
    reg = Registry.open(database_url=database_url, blob_url=str(tmp_path / "blobs"))
    reg.init()
    reg.add_base("bert", tiny.base)
    reg.push("alpha", tiny.finetunes["alpha"], base="bert", meta={"task": "toy"})
    reg.push("alpha", tiny.finetunes["beta"], base="bert")
    reg.push("gamma", tiny.finetunes["gamma"], base="bert", codec="quant:bits=4")
    reg.tag("alpha@1", "stable")
    before = [v.to_dict() for v in reg.list(all_versions=True)]
    cfg = alembic_config(reg.engine)
    command.downgrade(cfg, start)  # the database as an older tvstore left it, data included
    assert reg.schema_revision()[0] == start
    with pytest.raises(SchemaError, match=rf"revision {start}, this tvstore needs {revisions(reg)[-1]}\): run `tvstore db upgrade`"):
        reg.list()
    reg.close()

    upgraded = json.loads(cli("db", "upgrade", "--json").stdout)
    assert upgraded == {"from": start, "to": revisions(Registry.open(database_url=database_url, blob_url=str(tmp_path / "blobs")))[-1]}
    reg = Registry.open(database_url=database_url, blob_url=str(tmp_path / "blobs"))
    assert [v.to_dict() for v in reg.list(all_versions=True)] == before
    reg.pull_checkpoint("alpha:stable", tmp_path / "out")
    assert_bit_equal(load_file(tmp_path / "out" / "model.safetensors"), tiny.tensors(tiny.finetunes["alpha"]))
    assert reg.verify().ok
    assert reg.push("alpha", tiny.finetunes["gamma"], base="bert").version == 3  # numbering continues
    assert "vector_names" in inspect(reg.engine).get_table_names()
    reg.close()


def test_versions_are_never_reused(registry, tiny) -> None:
    registry.add_base("bert", tiny.base)
    registry.push("a", tiny.finetunes["alpha"], base="bert")
    registry.push("a", tiny.finetunes["beta"], base="bert")
    registry.remove("a", all_versions=True)
    assert registry.push("a", tiny.finetunes["gamma"], base="bert").version == 3
