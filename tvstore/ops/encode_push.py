"""The encoding half of every push: which reader to use, and the checks on its arguments.

A local push and a push through ``tvstore serve`` both encode on the machine
that holds the checkpoint; they differ only in where the base's rows come
from and where the blobs go, so both call :func:`encode_push`.
"""

from __future__ import annotations

from pathlib import Path

from tvstore.blobs import BlobStore
from tvstore.errors import UsageError
from tvstore.ops.push import PendingVector
from tvstore.tensors.codec_plan import CodecPlan
from tvstore.tensors.sources import BaseSource
from tvstore.util.progress import Progress, no_progress


def check_push_args(finetuned: object, from_checkpoint: object, to_checkpoint: object) -> None:
    """One fine-tune, or both ends of a difference; refused before anything is read."""
    if finetuned is None and (from_checkpoint is None or to_checkpoint is None):
        raise UsageError("give a fine-tuned checkpoint, or both --from and --to")
    if finetuned is not None and (from_checkpoint or to_checkpoint):
        raise UsageError("give either a fine-tuned checkpoint or --from/--to, not both")


def encode_push(
    name: str,
    source: BaseSource,
    blobs: BlobStore,
    plan: CodecPlan,
    finetuned: Path | None,
    from_checkpoint: Path | None = None,
    to_checkpoint: Path | None = None,
    extra: bool = False,
    progress: Progress = no_progress,
    prefix: str | None = None,
) -> PendingVector:
    """Encode a fine-tune, a PEFT adapter or a difference against ``source``; blobs land in ``blobs``.

    ``prefix``: taken off a fine-tune's tensor names to meet the base's (``None``: detected).
    """
    from tvstore.checkpoint.peft import is_adapter_dir
    from tvstore.ops.push import push_difference, push_finetune
    from tvstore.ops.push_lora import push_adapter

    if finetuned is not None and is_adapter_dir(finetuned):
        return push_adapter(name, finetuned, source, blobs, extra, progress)
    if finetuned is not None:
        return push_finetune(name, finetuned, source, blobs, plan, extra, progress, prefix)
    assert from_checkpoint is not None and to_checkpoint is not None
    return push_difference(name, from_checkpoint, to_checkpoint, source, blobs, plan, extra, progress)
