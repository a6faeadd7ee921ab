"""A finished push (``PendingVector``) or base add as JSON and back: the client encodes, the server commits.

The server rebuilds the pending vector from untrusted input, so anything
malformed becomes one ``UsageError`` naming the push, never a traceback.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from tvstore.blobs.base import check_digest
from tvstore.codecs import get_codec
from tvstore.codecs.encoded import KINDS
from tvstore.db.models import BaseFile, BaseModel, BaseTensor
from tvstore.checkpoint.dtypes import dtype_from_name, dtype_name
from tvstore.errors import TvstoreError, UsageError
from tvstore.ops.push import PendingVector, StoredComponent, StoredTensor
from tvstore.tensors.codec_plan import CodecPlan
from tvstore.tensors.metrics import ErrorStats
from tvstore.util.refs import check_name

_STATS = ("ref_sq", "rec_sq", "err_sq", "dot")
_COMPONENT = ("codec", "blob", "blob_size", "scale", "mask_blob", "mask_size", "kind", "mask_name")


def pending_to_dict(pending: PendingVector) -> dict[str, Any]:
    return {
        "name": pending.name, "base": pending.base_name, "kind": pending.kind, "plan": pending.plan.get_config(),
        "source_digest": pending.source_digest, "parent_digests": pending.parent_digests,
        "codec_config": pending.codec_config, "tensors": [_tensor_to_dict(t) for t in pending.tensors],
    }


def _tensor_to_dict(t: StoredTensor) -> dict[str, Any]:
    return {
        "name": t.name, "role": t.role, "dtype": dtype_name(t.dtype), "shape": list(t.shape), "codec": t.codec,
        "raw_bytes": t.raw_bytes, "stored_bytes": t.stored_bytes,
        "stats": {k: getattr(t.stats, k) for k in _STATS},
        "components": [{k: getattr(c, k) for k in _COMPONENT} for c in t.components],
    }


def pending_from_dict(data: dict[str, Any]) -> PendingVector:
    """Validate and rebuild; ``UsageError`` on anything malformed (names checked as a local push does)."""
    try:
        pending = PendingVector(
            check_name(data["name"], "task vector name"), check_name(data["base"], "base name"), str(data["kind"]),
            CodecPlan.from_config(data["plan"]),
            [_tensor_from_dict(t) for t in data["tensors"]],
            data.get("source_digest"),
            {role: (str(p), check_digest(d)) for role, (p, d) in (data.get("parent_digests") or {}).items()},
            data.get("codec_config"),
        )
    except TvstoreError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UsageError(f"malformed push of {data.get('name')!r}: {type(exc).__name__}: {exc}") from None
    if pending.kind not in ("finetune", "difference", "lora"):
        raise UsageError(f"malformed push of {pending.name!r}: kind {pending.kind!r}")
    return pending


def _kind(kind: object) -> str:
    if kind not in KINDS:
        raise ValueError(f"component kind {kind!r} is not one of {', '.join(KINDS)}")
    return str(kind)


def _tensor_from_dict(t: dict[str, Any]) -> StoredTensor:
    comps = [
        StoredComponent(dict(c["codec"]), check_digest(c["blob"]), int(c["blob_size"]), float(c["scale"]),
                        c["mask_blob"] and check_digest(c["mask_blob"]), int(c["mask_size"]), _kind(c["kind"]), c.get("mask_name"))
        for c in t["components"]
    ]
    return StoredTensor(
        str(t["name"]), str(t["role"]), dtype_from_name(t["dtype"]), tuple(int(n) for n in t["shape"]), dict(t["codec"]),
        int(t["raw_bytes"]), int(t["stored_bytes"]), ErrorStats(**{k: float(t["stats"][k]) for k in _STATS}), comps,
    )


def blob_digests(pending: PendingVector) -> list[str]:
    """Every blob a pending vector refers to (payloads and masks), in order, once each."""
    found = [d for t in pending.tensors for c in t.components for d in (c.blob, c.mask_blob) if d]
    return list(dict.fromkeys(found))


def base_to_dict(base: BaseModel, sizes: list[tuple[str, int]]) -> dict[str, Any]:
    """A base a remote client stored the blobs of (``ops.bases.store_base``), for the server to commit."""
    return {
        "name": base.name, "digest": base.digest, "source": base.source, "num_params": base.num_params,
        "raw_bytes": base.raw_bytes, "stored_bytes": base.stored_bytes,
        "tensors": [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "codec": t.codec, "blob": t.blob_digest}
                    for t in base.tensors],
        "files": [{"path": f.path, "blob": f.blob_digest} for f in base.files],
        "sizes": [[d, n] for d, n in sizes],
    }


def base_from_dict(data: dict[str, Any]) -> tuple[BaseModel, list[tuple[str, int]]]:
    """Validate and rebuild (names, dtypes, codecs, digests and side-file paths checked); ``UsageError`` if malformed."""
    try:
        tensors = [
            BaseTensor(position=i, name=str(t["name"]), dtype=dtype_name(dtype_from_name(t["dtype"])),
                       shape=[int(n) for n in t["shape"]], codec=get_codec(dict(t["codec"])).get_config(),
                       blob_digest=check_digest(t["blob"]))
            for i, t in enumerate(data["tensors"])
        ]
        files = [BaseFile(path=_side_path(f["path"]), blob_digest=check_digest(f["blob"])) for f in data["files"]]
        base = BaseModel(name=check_name(data["name"], "base name"), digest=check_digest(data["digest"]),
                         source=str(data["source"]), num_params=int(data["num_params"]), raw_bytes=int(data["raw_bytes"]),
                         stored_bytes=int(data["stored_bytes"]), tensors=tensors, files=files)
        sizes = [(check_digest(d), int(n)) for d, n in data["sizes"]]
    except TvstoreError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UsageError(f"malformed base add of {data.get('name')!r}: {type(exc).__name__}: {exc}") from None
    return base, sizes


def _side_path(path: str) -> str:
    """A side file's path stays inside the folders it is written into."""
    parts = PurePosixPath(path).parts
    if not parts or PurePosixPath(path).is_absolute() or ".." in parts or "\\" in path:
        raise UsageError(f"invalid side file path {path!r}: expected a relative path inside the checkpoint")
    return path
