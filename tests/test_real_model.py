"""A real pretrained model from PyPI (all-MiniLM-L6-v2), really fine-tuned a few steps,
pushed and pulled bit-exact; the lossless codec must beat plain zstd on its delta."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import zstandard
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "demo"))
from make_finetunes import base_dir, finetune  # noqa: E402

from test_registry import assert_bit_equal  # noqa: E402


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("minilm") / "sports"
    finetune("sports", out, steps=2)
    return base_dir(), out


def test_minilm_finetune_round_trips_bit_exact(registry, minilm, tmp_path: Path) -> None:
    base, ft = minilm
    registry.add_base("minilm", base)
    info = registry.push("sports", ft, base="minilm")
    assert info.num_params == 22_713_216 and info.raw_bytes == 4 * 22_713_216
    registry.pull_checkpoint("sports", tmp_path / "out")
    assert_bit_equal(load_file(tmp_path / "out" / "model.safetensors"), load_file(ft / "model.safetensors"))
    for side in ("config.json", "tokenizer.json", "vocab.txt", "1_Pooling/config.json"):
        assert (tmp_path / "out" / side).read_bytes() == (base / side).read_bytes()

    base_t, ft_t = load_file(base / "model.safetensors"), load_file(ft / "model.safetensors")
    raw = b"".join((ft_t[k] - base_t[k]).contiguous().view(torch.uint8).numpy().tobytes() for k in ft_t)
    zstd_ratio = len(raw) / len(zstandard.ZstdCompressor(level=3).compress(raw))
    ours = info.raw_bytes / info.stored_bytes
    print(f"\nMiniLM delta, lossless: tvstore {ours:.3f}x, plain zstd-3 {zstd_ratio:.3f}x")
    assert ours > zstd_ratio
