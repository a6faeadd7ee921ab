"""``tvstore merge``: build a model from stored task vectors, or register the merge."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tvstore.cli.context import registry
from tvstore.cli.output import emit_json, out
from tvstore.cli.search import merge_searched
from tvstore.errors import UsageError
from tvstore.util.units import parse_size


def merge(
    ctx: typer.Context,
    recipe: Path = typer.Option(..., "--recipe", "-r", help="YAML recipe (tvstore's or mergekit's format)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the merged model as a HF directory."),
    save_as: Optional[str] = typer.Option(None, "--save-as", help="Register the merge as a task vector instead."),
    codec: Optional[str] = typer.Option(None, "--codec", help="With --save-as: store encoded deltas, not the recipe."),
    codec_for: list[str] = typer.Option([], "--codec-for", help="PATTERN=CODEC for matching tensors (repeatable)."),
    shard_size: str = typer.Option("5GB", "--shard-size", help="Largest shard with --out."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="Output dtype with --out (fp32, bf16, fp16)."),
    extra_tensors: Optional[str] = typer.Option(None, "--extra-tensors", help="Tensors the base lacks (heads): merge, copy, refuse, drop or from:REF (overrides the recipe)."),
    search: list[str] = typer.Option([], "--search", help="KEY=LO:HI[:N] to search by --score-cmd: lambda, weight, density, NAME.weight (repeatable)."),
    score_cmd: Optional[str] = typer.Option(None, "--score-cmd", help="With --search: command scoring a merged checkpoint {dir}, printing one number."),
    json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Merge task vectors (task arithmetic, TIES, DARE, ...) into a checkpoint, or save the merge."""
    if search or score_cmd is not None:
        if not search:
            raise UsageError("--score-cmd goes with --search KEY=LO:HI (the parameters to search)")
        other = bool(out_dir or codec or codec_for or dtype)
        return merge_searched(ctx, recipe, search, score_cmd, save_as, other_options=other, json=json)
    if (out_dir is None) == (save_as is None):
        raise UsageError("give exactly one of --out DIR or --save-as NAME")
    if not recipe.is_file():
        raise UsageError(f"recipe {recipe} does not exist")
    reg = registry(ctx)
    source = reg.recipe(recipe, extra_tensors)
    if out_dir is not None:
        if codec or codec_for:
            raise UsageError("--codec applies to --save-as only")
        from tvstore.checkpoint.dtypes import dtype_from_name  # imports torch: only when merging

        written = reg.merge_to_dir(source, out_dir, parse_size(shard_size), dtype_from_name(dtype) if dtype else None)
        emit_json({"out": str(written)}) if json else out.print(f"wrote merged model to {written}", highlight=False)
        return
    if dtype:
        raise UsageError("--dtype applies to --out only")
    info = reg.save_merge(save_as, source, codec, tuple(codec_for))
    if json:
        emit_json(info.to_dict())
        return
    how = "as its recipe (rebuilt on read)" if codec is None else f"encoded with {codec}"
    out.print(f"saved merge {info.ref} {how}", highlight=False)
