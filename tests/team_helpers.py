"""Helpers for the team-scale tests: tiny overlapping checkpoints, the push driver, and checks.

The checkpoints are single ``.safetensors`` files of a few tensors, built
with torch alone (no transformers), so hundreds of pushes stay cheap. Every
fine-tune shares its first ``SHARED`` tensors' deltas with every other one,
so concurrent pushes write (and dedupe) the same blobs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tvstore import Registry

DRIVER = Path(__file__).with_name("push_driver.py")
TENSORS = 10
SHARED = 4
SHAPE = (48, 48)


@dataclass
class Checkpoints:
    base: Path
    finetunes: dict[str, Path]

    def tensors(self, name: str) -> dict[str, torch.Tensor]:
        return load_file(self.finetunes[name])


def make_checkpoints(root: Path, count: int = 4, tensors: int = TENSORS, shape: tuple[int, int] = SHAPE) -> Checkpoints:
    """A base and ``count`` fine-tunes; tensors ``w0..w{SHARED-1}`` move the same way in all of them."""
    root.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(7)
    base = {f"w{i}": torch.randn(*shape, generator=g) for i in range(tensors)}
    shared = {f"w{i}": 0.01 * torch.randn(*shape, generator=g) for i in range(SHARED)}
    save_file(base, root / "base.safetensors")
    finetunes = {}
    for k in range(count):
        ft = {n: t + shared[n] if n in shared else t + 0.01 * torch.randn(*shape, generator=g) for n, t in base.items()}
        finetunes[f"ft{k}"] = root / f"ft{k}.safetensors"
        save_file(ft, finetunes[f"ft{k}"])
    return Checkpoints(root / "base.safetensors", finetunes)


def run_driver(spec: dict, workdir: Path, env: dict[str, str] | None = None, timeout: float = 240) -> dict:
    """Run ``push_driver.py`` with ``spec``; returns its report plus every child's results."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec = {**spec, "workdir": str(workdir)}
    spec_path = workdir / "spec.json"
    spec_path.write_text(json.dumps(spec))
    proc = subprocess.run(
        [sys.executable, str(DRIVER), str(spec_path)], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == 0, f"driver failed: {proc.stderr[-4000:]}"
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    report["stderr"] = proc.stderr
    report["results"] = [_read_json(workdir / f"pusher-{i}.json", []) for i in range(len(spec["pushers"]))]
    report["gc_results"] = [_read_json(workdir / f"gc-{i}.json", None) for i in range(len(report["gc"]))]
    report["traces"] = [_read_lines(workdir / f"pusher-{i}.trace") for i in range(len(spec["pushers"]))]
    return report


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except FileNotFoundError:
        return []


def _read_json(path: Path, default):  # noqa: ANN001, ANN202
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return default


def versions(reg: Registry, name: str) -> list[int]:
    return [v.version for v in reg.list(name, all_versions=True)] if any(
        v.name == name for v in reg.list()
    ) else []


def assert_bit_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        assert a[name].view(torch.uint8).equal(b[name].view(torch.uint8)), name


def assert_rebuilds(reg: Registry, ref: str, expected: dict[str, torch.Tensor], out: Path) -> None:
    """``ref`` rebuilds bit-exactly to ``expected`` (every blob present and intact)."""
    reg.pull_checkpoint(ref, out)
    assert_bit_equal(load_file(out / "model.safetensors"), expected)
