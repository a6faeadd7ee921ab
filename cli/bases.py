"""``tvstore base ...``"""

from __future__ import annotations

from pathlib import Path

import typer

from tvstore.cli.context import registry
from tvstore.cli.output import emit_json, human_bytes, out, table

app = typer.Typer(no_args_is_help=True)


@app.command("add")
def add(ctx: typer.Context, name: str, path: Path, json: bool = typer.Option(False, "--json")) -> None:
    """Register a base model from a .safetensors file or a Hugging Face directory."""
    info = registry(ctx).add_base(name, path)
    if json:
        emit_json(info.to_dict())
        return
    out.print(
        f"added base [bold]{info.name}[/bold]: {info.num_tensors} tensors, {info.num_params:,} parameters, "
        f"{human_bytes(info.raw_bytes)} -> {human_bytes(info.stored_bytes)} stored, {len(info.side_files)} side files"
    )


@app.command("ls")
def ls(ctx: typer.Context, json: bool = typer.Option(False, "--json")) -> None:
    """List base models."""
    infos = registry(ctx).bases()
    if json:
        emit_json([i.to_dict() for i in infos])
        return
    rows = [[i.name, f"{i.num_params:,}", str(i.num_tensors), human_bytes(i.raw_bytes), human_bytes(i.stored_bytes), i.digest[:12]] for i in infos]
    table(None, ["name", "params", "tensors", "raw", "stored", "digest"], rows)


@app.command("show")
def show(ctx: typer.Context, name: str, json: bool = typer.Option(False, "--json")) -> None:
    """Show one base model."""
    info = registry(ctx).base(name)
    if json:
        emit_json(info.to_dict())
        return
    for key, value in info.to_dict().items():
        out.print(f"[bold]{key}[/bold]: {value}", highlight=False)


@app.command("rm")
def rm(ctx: typer.Context, name: str) -> None:
    """Remove a base model no task vector uses (its blobs go at the next gc)."""
    registry(ctx).remove_base(name)
    out.print(f"removed base {name}")
