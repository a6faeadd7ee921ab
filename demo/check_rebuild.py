"""Compare a rebuilt checkpoint with the original, bit for bit, and report storage."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.reshape(-1).view(torch.uint8).equal(b.reshape(-1).view(torch.uint8))


def main(original: Path, rebuilt: Path, home: Path) -> int:
    want, got = load_file(original / "model.safetensors"), load_file(rebuilt / "model.safetensors")
    exact = want.keys() == got.keys() and all(same_bits(want[k], got[k]) for k in want)
    stored = sum(f.stat().st_size for f in (home / "blobs").rglob("*") if f.is_file())
    full = (original / "model.safetensors").stat().st_size
    print(f"\nrebuilt checkpoint is bit-exact: {exact}")
    print(f"blob store holds {stored / 1e6:.1f} MB for 1 base + 3 task vectors; one full checkpoint is {full / 1e6:.1f} MB")
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main(*map(Path, sys.argv[1:4])))
