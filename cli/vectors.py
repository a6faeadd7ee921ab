"""Task vector commands: push, pull, ls, show, lineage, tag, rm."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from tvstore.cli.context import registry
from tvstore.cli.output import emit_json, fmt_float, fmt_ratio, human_bytes, lineage_tree, out, table
from tvstore.cli.search import push_searched, search_lines
from tvstore.errors import UsageError
from tvstore.ops.info import VectorInfo
from tvstore.util.refs import parse_ref
from tvstore.util.units import parse_meta, parse_size

if TYPE_CHECKING:
    from tvstore.ops.lora_export import LoraExport  # imports torch: the CLI loads it only when exporting

JSON = typer.Option(False, "--json", help="Machine-readable output.")


def _summary(info: VectorInfo) -> str:
    if info.is_recipe:
        return (
            f"[bold]{info.ref}[/bold] ({info.kind} of {info.base}): recipe {info.recipe['method']} of "
            f"{', '.join(info.recipe_inputs)}, rebuilt on read (stores no tensors)"
        )
    return (
        f"[bold]{info.ref}[/bold] ({info.kind} of {info.base}): {info.num_tensors} tensors, "
        f"{human_bytes(info.raw_bytes)} -> {human_bytes(info.stored_bytes)} ({fmt_ratio(info.ratio)}), "
        f"rel L2 {fmt_float(info.rel_l2)}, cosine {fmt_float(info.cosine, 6)}"
    )


def push(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Task vector name; each push adds a version."),
    finetuned: Optional[Path] = typer.Argument(None, help="Fine-tuned checkpoint (.safetensors or HF directory)."),
    base: str = typer.Option(..., "--base", help="Registered base model the fine-tune was made from."),
    from_ckpt: Optional[Path] = typer.Option(None, "--from", help="Push TO - FROM instead (e.g. GRPO - SFT)."),
    to_ckpt: Optional[Path] = typer.Option(None, "--to", help="See --from."),
    codec: str = typer.Option("lossless", "--codec", help="Codec spec (lossless, quant:bits=4, ternary:density=0.1, ..., auto)."),
    codec_for: list[str] = typer.Option([], "--codec-for", help="PATTERN=CODEC for matching tensors (repeatable)."),
    max_error: Optional[float] = typer.Option(None, "--max-error", help="With --codec auto: largest relative L2 error per tensor."),
    extra: bool = typer.Option(False, "--extra", help="Store tensors the base lacks (e.g. a task head)."),
    meta: list[str] = typer.Option([], "--meta", help="key=value metadata (repeatable)."),
    strip_prefix: Optional[str] = typer.Option(None, "--strip-prefix", help="Take PREFIX (e.g. 'bert.') off the fine-tune's tensor names to meet the base's; detected if not given, '' for none."),
    target: Optional[float] = typer.Option(None, "--target", help="With --score-cmd: keep score >= TARGET x the lossless score (default 0.99)."),
    score_cmd: Optional[str] = typer.Option(None, "--score-cmd", help="With --codec auto: command scoring a rebuilt checkpoint {dir}, printing one number."),
    json: bool = JSON,
) -> None:
    """Push a fine-tune (minus its base) as a new version of a task vector."""
    if score_cmd is not None or target is not None:
        other = bool(from_ckpt or to_ckpt or codec_for or max_error is not None)
        return push_searched(ctx, name, finetuned, base, codec, target, score_cmd, extra=extra, meta=parse_meta(meta),
                             other_options=other, json=json)
    if max_error is not None:
        codec = _with_max_error(codec, max_error)
    info = registry(ctx).push(
        name, finetuned, base=base, codec=codec, codec_rules=codec_for, extra=extra,
        meta=parse_meta(meta), from_checkpoint=from_ckpt, to_checkpoint=to_ckpt, strip_prefix=strip_prefix,
    )
    emit_json(info.to_dict()) if json else out.print("pushed " + _summary(info), highlight=False)


def _with_max_error(codec: str, max_error: float) -> str:
    """``--codec auto --max-error E`` as the one spec ``auto:max_error=E`` (read by the spec parser)."""
    from json import dumps as json_text  # NaN and Infinity as the spec parser reads them

    from tvstore.codecs.spec import split_codec_spec  # imports torch: only when pushing

    codec_id, params = split_codec_spec(codec)
    if codec_id != "auto":
        raise UsageError("--max-error goes with --codec auto")
    if "max_error" in params:
        raise UsageError("max_error given twice (in --codec and as --max-error)")
    return f"auto:max_error={json_text(max_error)}"


def pull(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="NAME, NAME@VERSION or NAME:TAG."),
    out_path: Path = typer.Option(..., "--out", "-o", help="Output .safetensors file, or directory with --checkpoint."),
    checkpoint: bool = typer.Option(False, "--checkpoint", help="Rebuild base + vector as a Hugging Face directory."),
    shard_size: str = typer.Option("5GB", "--shard-size", help="Largest shard with --checkpoint."),
    lora: bool = typer.Option(False, "--lora", help="Write a PEFT LoRA adapter directory (truncated SVD per changed 2-D weight)."),
    rank: Optional[str] = typer.Option(None, "--rank", help="With --lora: the rank, or 'auto' with --max-error (default 16)."),
    max_error: Optional[float] = typer.Option(None, "--max-error", help="With --lora --rank auto: largest relative L2 error per module."),
    target_modules: list[str] = typer.Option([], "--target-modules", help="With --lora: PEFT module names or globs (repeatable; default all)."),
    head_from: Optional[str] = typer.Option(None, "--head-from", help="With --checkpoint of a saved merge: the head (tensors the base lacks) of this input."),
    per_task: bool = typer.Option(False, "--per-task", help="With --checkpoint of a saved merge: OUT/<input>/ per input, each with its own head."),
    json: bool = JSON,
) -> None:
    """Write a task vector, the fine-tune rebuilt from it, or a LoRA adapter of it."""
    reg = registry(ctx)
    if (head_from is not None or per_task) and not checkpoint:
        raise UsageError("--head-from and --per-task go with --checkpoint")
    if head_from is not None and per_task:
        raise UsageError("give --head-from or --per-task, not both")
    if per_task:
        _print_per_task(reg.show(ref).ref, reg.pull_per_task(ref, out_path, parse_size(shard_size)), json)
        return
    if lora:
        if checkpoint:
            raise UsageError("give --lora or --checkpoint, not both")
        _print_lora(reg.to_lora(ref, out_path, rank or 16, max_error, target_modules), json)
        return
    if rank is not None or max_error is not None or target_modules:
        raise UsageError("--rank, --max-error and --target-modules go with --lora")
    if checkpoint:
        written = reg.pull_checkpoint(ref, out_path, parse_size(shard_size), head_from)
    else:
        written = reg.pull(ref, out_path)
    info = reg.show(ref)
    if json:
        emit_json({"ref": info.ref, "out": str(written), "checkpoint": checkpoint})
        return
    what = "checkpoint" if checkpoint else "task vector"
    out.print(f"wrote {what} {info.ref} to {written}", highlight=False)


def _print_per_task(ref: str, written: list[Path], json: bool) -> None:
    if json:
        emit_json({"ref": ref, "out": [str(p) for p in written], "checkpoint": True, "per_task": True})
        return
    out.print(f"wrote {len(written)} checkpoints of {ref}, one per task: {', '.join(map(str, written))}", highlight=False)


def _print_lora(export: LoraExport, json: bool) -> None:
    if json:
        emit_json(export.to_dict())
        return
    out.print(f"wrote LoRA adapter of {export.vector} to {export.out}: {len(export.modules)} modules, rank {export.rank}, "
              f"rel L2 {fmt_float(export.rel_l2)} (whole vector)", highlight=False)
    rows = [[m.module, m.kind, "x".join(map(str, m.shape)), str(m.rank), fmt_float(m.kept_energy, 6),
             fmt_float(m.rel_l2), "yes" if m.exact else ""] for m in export.modules]
    table(None, ["module", "kind", "shape", "rank", "kept energy", "rel L2", "exact"], rows)
    if export.modules_to_save:
        out.print(f"modules_to_save: {', '.join(export.modules_to_save)}", highlight=False)
    if export.dropped:
        out.print(f"not in the adapter (1-D or untargeted deltas): {len(export.dropped)} tensors", highlight=False)


def ls(
    ctx: typer.Context,
    name: Optional[str] = typer.Argument(None, help="Only this name."),
    all_versions: bool = typer.Option(False, "--all-versions", "-a", help="Every version, not just the newest."),
    json: bool = JSON,
) -> None:
    """List task vectors with their codec, size and error."""
    infos = registry(ctx).list(name, all_versions)
    if json:
        emit_json([i.to_dict() for i in infos])
        return
    rows = [
        [i.name, str(i.version), i.base, i.codec.get("id", "?"), human_bytes(None if i.is_recipe else i.raw_bytes),
         human_bytes(i.stored_bytes),
         fmt_ratio(i.ratio), fmt_float(i.rel_l2), fmt_float(i.cosine, 6), ",".join(i.tags)]
        for i in infos
    ]
    table(None, ["name", "version", "base", "codec", "raw", "stored", "ratio", "rel L2", "cosine", "tags"], rows)


def show(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="NAME, NAME@VERSION or NAME:TAG."),
    tensors: bool = typer.Option(False, "--tensors", help="Per-tensor codec, size and error."),
    json: bool = JSON,
) -> None:
    """Show one version of a task vector."""
    reg = registry(ctx)
    info = reg.show(ref)
    per_tensor = reg.tensors(ref) if tensors else []
    if json:
        data = info.to_dict()
        if tensors:
            data["tensors"] = [t.to_dict() for t in per_tensor]
        emit_json(data)
        return
    out.print(_summary(info), highlight=False)
    for key in ("codec", "meta", "tags", "created_at", "recipe"):
        value = getattr(info, key)
        if key == "meta":
            value = {k: v for k, v in value.items() if k != "search"}  # printed on its own lines below
        if value:
            out.print(f"  {key}: {value}", highlight=False)
    for line in search_lines(info.meta):
        out.print(line, highlight=False)
    if tensors:
        rows = [
            [t.name, t.role, t.codec.get("id", "?"), str(t.components), human_bytes(t.raw_bytes),
             human_bytes(t.stored_bytes), fmt_ratio(t.ratio), fmt_float(t.rel_l2), fmt_float(t.cosine, 6)]
            for t in per_tensor
        ]
        table(None, ["tensor", "role", "codec", "components", "raw", "stored", "ratio", "rel L2", "cosine"], rows)


def lineage(ctx: typer.Context, ref: str = typer.Argument(...), json: bool = JSON) -> None:
    """Show what a vector came from and what was made from it, as a tree."""
    reg = registry(ctx)
    if json:
        emit_json(reg.lineage(ref))
        return
    lineage_tree(*reg.lineage_nodes(ref))


def tag(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="The version to tag (NAME@VERSION)."),
    tag_name: str = typer.Argument(..., metavar="TAG"),
    delete: bool = typer.Option(False, "--delete", help="Remove the tag from NAME instead."),
) -> None:
    """Point NAME:TAG at a version (moving it if it exists), or remove it."""
    reg = registry(ctx)
    if delete:
        name = parse_ref(ref).name
        reg.untag(name, tag_name)
        out.print(f"removed tag {name}:{tag_name}", highlight=False)
        return
    info = reg.tag(ref, tag_name)
    out.print(f"{info.name}:{tag_name} -> {info.ref}", highlight=False)


def rm(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="NAME@VERSION, NAME:TAG, or NAME with --all-versions."),
    all_versions: bool = typer.Option(False, "--all-versions", help="Remove every version of NAME."),
    json: bool = JSON,
) -> None:
    """Remove task vector versions (their blobs are reclaimed by gc)."""
    removed = registry(ctx).remove(ref, all_versions)
    emit_json({"removed": removed}) if json else out.print(f"removed {', '.join(removed)}", highlight=False)


def pack(
    ctx: typer.Context,
    refs: list[str] = typer.Argument(..., help="Two or more task vectors of one base (NAME, NAME@VERSION, NAME:TAG)."),
    codec: str = typer.Option(..., "--codec", help="rtvq, tall, emr or mixed (parameters as rtvq:bits=2.5)."),
    bits: Optional[float] = typer.Option(None, "--bits", help="rtvq or mixed: budget in bits per parameter per task (mixed chooses across codecs per tensor)."),
    lam: Optional[float] = typer.Option(None, "--lambda", help="tall: mask threshold lambda (default 0.4)."),
    shared: Optional[str] = typer.Option(None, "--shared-codec", help="tall/emr: codec of the shared vector."),
    json: bool = JSON,
) -> None:
    """Re-encode a group of vectors into a shared form; each gets a new version (compressed-from)."""
    infos = registry(ctx).pack(refs, codec, bits=bits, **{"lambda": lam}, shared=shared)
    if json:
        emit_json([i.to_dict() for i in infos])
        return
    for info in infos:
        out.print("packed " + _summary(info), highlight=False)


def register(app: typer.Typer) -> None:
    for command in (push, pull, ls, show, lineage, tag, rm, pack):
        app.command(command.__name__)(command)
