"""A registry written before bases were stored raw still reads, and rebuilds bit for bit.

``tests/fixtures/registry_lossless_base`` was made by tvstore at commit
e657fae, when base tensors were stored with the lossless byte-plane codec
(since then new bases use the ``raw`` codec, see :mod:`tvstore.codecs.raw`).
``expected.json`` holds the SHA-256 of every tensor that release rebuilt for
each vector; the exact vector's equal the fine-tune's own tensors.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from conftest import Cli
from tvstore import Registry

FIXTURE = Path(__file__).parent / "fixtures" / "registry_lossless_base"


def tensor_digests(path: Path) -> dict[str, str]:
    return {k: hashlib.sha256(t.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()
            for k, t in sorted(load_file(path).items())}


def test_old_registry_upgrades_and_rebuilds_bit_exact(tmp_path: Path) -> None:
    home = tmp_path / "reg"
    shutil.copytree(FIXTURE, home)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TVSTORE_")}
    cli = Cli({**env, "TVSTORE_HOME": str(home)}, tmp_path)
    cli("db", "upgrade")
    expected = json.loads((FIXTURE / "expected.json").read_text())
    for ref in ("exact", "q4"):
        cli("pull", ref, "--checkpoint", "--out", tmp_path / ref)
        assert tensor_digests(tmp_path / ref / "model.safetensors") == expected[ref]
    with Registry.open(home=str(home)) as reg:
        report = reg.verify()
        assert report.ok and report.blobs_checked == 14
        rebuilt = {name: hashlib.sha256(t.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()
                   for name, t in reg.rebuild("exact")}
    assert dict(sorted(rebuilt.items())) == expected["exact"]
