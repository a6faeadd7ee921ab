"""The score-steered forms of ``push`` and ``merge``: argument checks and output, nothing more."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from tvstore.cli.context import registry
from tvstore.cli.output import emit_json, fmt_float, human_bytes, out, table
from tvstore.errors import UsageError

DEFAULT_TARGET = 0.99


def push_searched(ctx: typer.Context, name: str, finetuned: Path | None, base: str, codec: str, target: float | None,
                  score_cmd: str | None, *, extra: bool, meta: dict[str, str], other_options: bool, json: bool) -> None:
    """``push --codec auto --target T --score-cmd CMD``: the smallest codec keeping the score."""
    if score_cmd is None:
        raise UsageError("--target goes with --score-cmd (the command that scores a rebuilt checkpoint)")
    from tvstore.codecs.spec import split_codec_spec  # imports torch: only when pushing

    if split_codec_spec(codec)[0] != "auto":
        raise UsageError("--score-cmd goes with --codec auto (the search picks the codec)")
    if finetuned is None or other_options:
        raise UsageError("--score-cmd searches a fine-tuned checkpoint: give FINETUNED, without --from/--to/--codec-for")
    info = registry(ctx).push_searched(name, finetuned, base=base, score=score_cmd,
                                       target=DEFAULT_TARGET if target is None else target, extra=extra, meta=meta)
    if json:
        emit_json(info.to_dict())
        return
    found = info.meta["search"]
    out.print(f"pushed {info.ref} with {found['setting']}: {human_bytes(info.stored_bytes)}, "
              f"score {found['score']:g} >= {found['target']:g} x lossless {found['reference_score']:g}", highlight=False)
    print_trail(found)


def search_lines(meta: dict[str, Any]) -> list[str]:
    """``show``'s lines for a vector whose codec or recipe was chosen by a score search."""
    found = meta.get("search")
    if not isinstance(found, dict):
        return []
    goal = f" (target {found['target']:g} x reference {found['reference_score']:g})" if "target" in found else (
        f" (recipe as written: {found['reference_score']:g})")
    trail = "; ".join(f"{t['setting']} {t['score']:g}" + (f" at {t['bits_per_param']:.3f} bit/param" if "bits_per_param" in t else "")
                      for t in found.get("trail", []))
    return [f"  search: {found['setting']} scored {found['score']:g}{goal}, by {found['command']}",
            f"  search trail: {trail}"]


def print_trail(found: dict[str, Any]) -> None:
    rows = [[t["setting"], fmt_float(t["score"], 6), human_bytes(t["stored_bytes"]) if "stored_bytes" in t else "-",
             f"{t['bits_per_param']:.3f}" if "bits_per_param" in t else "-", "yes" if t.get("cached") else ""]
            for t in found["trail"]]
    table("search trail", ["setting", "score", "stored", "bit/param", "cached"], rows)


def merge_searched(ctx: typer.Context, recipe: Path, search: list[str], score_cmd: str | None, save_as: str | None,
                   *, other_options: bool, json: bool) -> None:
    """``merge --recipe R --search KEY=LO:HI --score-cmd CMD [--save-as NAME]``."""
    if score_cmd is None:
        raise UsageError("--search goes with --score-cmd (the command that scores a merged checkpoint)")
    if other_options:
        raise UsageError("--search takes --recipe, --score-cmd and optionally --save-as (no --out, --codec or --dtype)")
    best, found, saved = registry(ctx).search_merge(recipe, search, score_cmd, save_as)
    if json:
        emit_json({"recipe": best, "search": found.to_meta(), "saved": saved.ref if saved else None})
        return
    out.print(f"best {found.best}: score {found.score:g} (recipe as written: {found.reference:g})", highlight=False)
    print_trail(found.to_meta())
    if saved is not None:
        out.print(f"saved merge {saved.ref} with its score", highlight=False)
