"""Push: a fine-tune (or a difference of two) becomes a stored task vector.

Order of work, chosen so bad input costs nothing and a crash exposes nothing:
1. everything checkable from headers is checked (names, shapes, dtypes,
   extra tensors) before a byte of tensor data is read;
2. non-float tensors are compared with the base (they are never stored);
3. float tensors stream through the codecs, in parallel, and their blobs are
   written as they are encoded;
4. one metadata transaction makes the vector visible (or nothing does; blobs
   of a failed push are unreferenced and ``gc`` reclaims them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tvstore.blobs import BlobStore
from tvstore.checkpoint import Checkpoint, open_checkpoint
from tvstore.checkpoint.digest import manifest_digest, tensor_digest
from tvstore.checkpoint.prefix import strip_prefix
from tvstore.checkpoint.reader import TensorInfo
from tvstore.tensors.codec_plan import CodecPlan
from tvstore.tensors.encode import ABSENT, EncodedTensor, encode_delta, encode_extra, encode_finetune
from tvstore.errors import InvalidCheckpointError
from tvstore.tensors.metrics import ErrorStats
from tvstore.util.parallel import budgeted_map, default_workers
from tvstore.util.progress import Progress, no_progress
from tvstore.tensors.sources import BaseSource


@dataclass
class StoredComponent:
    codec: dict[str, Any]
    blob: str
    blob_size: int
    scale: float
    mask_blob: str | None
    mask_size: int
    kind: str
    mask_name: str | None = None


@dataclass
class StoredTensor:
    """An encoded tensor whose bytes are already in the blob store."""

    name: str
    role: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    codec: dict[str, Any]
    raw_bytes: int
    stored_bytes: int
    stats: ErrorStats
    components: list[StoredComponent]


def store_tensor(encoded: EncodedTensor, blobs: BlobStore) -> StoredTensor:
    comps = []
    for c in encoded.components:
        mask_blob = blobs.put(c.mask) if c.mask is not None else None
        comps.append(
            StoredComponent(
                c.codec, blobs.put(c.payload), len(c.payload), c.scale, mask_blob, len(c.mask or b""), c.kind,
                c.extra.get("mask_name"),
            )
        )
    return StoredTensor(
        encoded.name, encoded.role, encoded.dtype, encoded.shape, encoded.codec,
        encoded.raw_bytes, encoded.stored_bytes, encoded.stats, comps,
    )


@dataclass
class PendingVector:
    """Everything a push learned, ready for one metadata transaction."""

    name: str
    base_name: str
    kind: str
    plan: CodecPlan
    tensors: list[StoredTensor] = field(default_factory=list)
    source_digest: str | None = None
    parent_digests: dict[str, tuple[str, str]] = field(default_factory=dict)  # role -> (path, digest)
    codec_config: dict[str, Any] | None = None  # what to record as the vector's codec, if not the plan's
    name_prefix: str = ""  # stripped from the fine-tune's tensor names to meet the base's (``bert.``)

    @property
    def stats(self) -> ErrorStats:
        total = ErrorStats()
        for t in self.tensors:
            if t.role == "delta":
                total += t.stats
        return total


def _check_against_base(ckpt: Checkpoint, base: BaseSource, allow_extra: bool) -> list[str]:
    """Header-only checks; returns the extra tensor names (in checkpoint order)."""
    extras = []
    for info in ckpt.infos():
        if info.name not in base:
            extras.append(info.name)
            continue
        want = base.info(info.name)
        if info.shape != want.shape:
            raise InvalidCheckpointError(
                f"{ckpt.path}: tensor {info.name!r} has shape {list(info.shape)}, base {base.base.name!r} has {list(want.shape)}"
            )
        if info.dtype != want.dtype:
            raise InvalidCheckpointError(
                f"{ckpt.path}: tensor {info.name!r} is {info.dtype}, base {base.base.name!r} stores it as {want.dtype}; "
                "convert the checkpoint to the base's dtype first"
            )
    # non-float buffers (position_ids) may be absent: transformers often does not save them
    missing = [n for n in base.names() if n not in ckpt and base.info(n).dtype.is_floating_point]
    if missing:
        instead = f"; it has {len(extras)} tensor(s) the base lacks, e.g. {extras[0]!r}" if extras else ""
        raise InvalidCheckpointError(f"{ckpt.path}: tensor {missing[0]!r} of base {base.base.name!r} is missing{instead}")
    if extras and not allow_extra:
        raise InvalidCheckpointError(
            f"{ckpt.path}: tensor {extras[0]!r} is not in base {base.base.name!r} "
            f"({len(extras)} such tensor(s), e.g. a task head); pass --extra to store them with the vector"
        )
    return extras


def _non_float_present(ckpt: Checkpoint, base: BaseSource) -> list[str]:
    return [n for n in base.names() if not base.info(n).dtype.is_floating_point and n in ckpt]


def _absent(ckpt: Checkpoint, base: BaseSource) -> list[StoredTensor]:
    """Base buffers the fine-tune does not have, recorded so a rebuild leaves them out too."""
    return [
        StoredTensor(n, ABSENT, base.info(n).dtype, base.info(n).shape, {}, 0, 0, ErrorStats(), [])
        for n in base.names()
        if n not in ckpt
    ]


def _check_non_float(ckpt: Checkpoint, base: BaseSource) -> None:
    for name in _non_float_present(ckpt, base):
        if not torch.equal(ckpt.get(name), base.get(name)):
            raise InvalidCheckpointError(
                f"{ckpt.path}: non-float tensor {name!r} differs from base {base.base.name!r}; "
                "only float tensors can carry a task vector"
            )


def _non_float_digests(ckpt: Checkpoint, base: BaseSource) -> list[tuple[str, str]]:
    return [(n, tensor_digest(ckpt.get(n))) for n in _non_float_present(ckpt, base)]


def _float_names(base: BaseSource) -> list[str]:
    return [n for n in base.names() if base.info(n).dtype.is_floating_point]


def push_finetune(
    name: str,
    finetuned: Path,
    base: BaseSource,
    blobs: BlobStore,
    plan: CodecPlan,
    allow_extra: bool = False,
    progress: Progress = no_progress,
    prefix: str | None = None,
) -> PendingVector:
    """Encode ``finetuned - base`` (exact rebuild guaranteed for exact codecs).

    ``prefix`` is stripped from the fine-tune's names (``None``: detected, ``""``: none).
    """
    with open_checkpoint(finetuned) as raw:
        ft, prefix = strip_prefix(raw, set(base.names()), prefix)
        extras = _check_against_base(ft, base, allow_extra)
        _check_non_float(ft, base)
        pending = PendingVector(name, base.base.name, "finetune", plan, name_prefix=prefix)
        digests: list[tuple[str, str]] = []

        def work(tname: str) -> tuple[StoredTensor, str]:
            target = ft.get(tname)
            if tname in extras:
                return store_tensor(encode_extra(tname, target), blobs), tensor_digest(target)
            enc = encode_finetune(tname, target, lambda: base.get(tname), plan.codec_for(tname))
            return store_tensor(enc, blobs), tensor_digest(target)

        plan.check([base.info(n) for n in _float_names(base)])
        _run(work, _float_names(base) + extras, ft.info, pending, digests, progress, f"pushing {name}")
        pending.tensors += _absent(ft, base)
        pending.source_digest = manifest_digest(digests + _non_float_digests(ft, base))
        return pending


def push_difference(
    name: str,
    from_path: Path,
    to_path: Path,
    base: BaseSource,
    blobs: BlobStore,
    plan: CodecPlan,
    allow_extra: bool = False,
    progress: Progress = no_progress,
) -> PendingVector:
    """Encode ``to - from`` (e.g. theta_GRPO - theta_SFT); extras are taken from ``to``."""
    with open_checkpoint(from_path) as a, open_checkpoint(to_path) as b:
        _check_against_base(a, base, allow_extra=True)
        extras = _check_against_base(b, base, allow_extra)
        pending = PendingVector(name, base.base.name, "difference", plan)
        da: list[tuple[str, str]] = []
        db: list[tuple[str, str]] = []

        def work(tname: str) -> tuple[StoredTensor, str]:
            tb = b.get(tname)
            db.append((tname, tensor_digest(tb)))
            if tname in extras:
                return store_tensor(encode_extra(tname, tb), blobs), ""
            ta = a.get(tname)
            da.append((tname, tensor_digest(ta)))
            return store_tensor(encode_delta(tname, tb - ta, plan.codec_for(tname)), blobs), ""

        plan.check([base.info(n) for n in _float_names(base)])
        _run(work, _float_names(base) + extras, b.info, pending, [], progress, f"pushing {name}")
        pending.parent_digests = {
            "from": (str(from_path), manifest_digest(da + _non_float_digests(a, base))),
            "to": (str(to_path), manifest_digest(db + _non_float_digests(b, base))),
        }
        return pending


#: tensors encoded at once may hold this many times the largest tensor's bytes of input: the largest runs
#: alone, smaller ones side by side (a tensor's encoding holds ~3x its size at its peak; 1.25 measured 5.1x
#: the largest tensor for a lossless push of the 168M benchmark model, 1.0 measured 3.4x in the same time)
IN_FLIGHT_BUDGET = 1.0
#: workers beyond the cores: a local blob's fsync blocks its worker for milliseconds without using a core,
#: and the budget, not the worker count, bounds memory
IO_WORKERS = 2


def push_workers() -> int:
    return default_workers() + IO_WORKERS


def _run(
    work, names: list[str], info: Callable[[str], TensorInfo], pending: PendingVector, digests: list,
    progress: Progress, label: str,
) -> None:
    """``work`` over ``names`` in parallel, in a memory budget set by the largest tensor, results in order."""
    size = {n: info(n).nbytes for n in names}
    budget = int(IN_FLIGHT_BUDGET * max(size.values(), default=0))
    with progress(label, len(names)) as advance:
        for stored, digest in budgeted_map(work, names, size.__getitem__, budget, push_workers()):
            pending.tensors.append(stored)
            if digest:
                digests.append((stored.name, digest))
            advance(1)
