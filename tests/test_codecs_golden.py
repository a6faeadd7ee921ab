"""Golden fixtures: payloads written by earlier releases must decode to the same bits forever."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tvstore.codecs import codec_ids, get_codec

GOLDEN = Path(__file__).parent / "golden"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "i16": torch.int16, "i32": torch.int32}
FIXTURES = sorted(GOLDEN.glob("*/*.json"))


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int16 if t.element_size() == 2 else torch.int32)


@pytest.mark.parametrize("meta_path", FIXTURES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_golden_payload_decodes_bit_identically(meta_path: Path) -> None:
    meta = json.loads(meta_path.read_text())
    payload = meta_path.with_suffix(".bin").read_bytes()
    expected = load_file(str(meta_path.with_suffix(".safetensors")))["decoded"]
    got = get_codec(meta["config"]).decode(payload, tuple(meta["shape"]), DTYPES[meta["dtype"]])
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert torch.equal(bits(got), bits(expected))


def test_every_codec_has_golden_fixtures() -> None:
    have = {p.parent.name for p in FIXTURES}
    assert set(codec_ids()) <= have, f"run tests/golden/make_golden.py for {sorted(set(codec_ids()) - have)}"
    assert {json.loads(p.read_text())["dtype"] for p in GOLDEN.glob("lossless/*.json")} == set(DTYPES)
    assert {p.read_bytes()[0] for p in GOLDEN.glob("lossless/*.bin")} == {1, 2}  # plain and coded top planes


def test_generator_never_overwrites(tmp_path: Path) -> None:
    sys.path.insert(0, str(GOLDEN))
    try:
        import make_golden
    finally:
        sys.path.remove(str(GOLDEN))
    first = make_golden.write_missing(tmp_path)
    assert first
    stamp = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    assert make_golden.write_missing(tmp_path) == []
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == stamp
