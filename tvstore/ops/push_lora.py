"""Push a PEFT LoRA adapter: each adapted tensor stored exactly as its factors.

No dense delta is ever formed: the component is a ``lowrank`` payload built
from B, A and the scale, so an adapter of a 7B model costs what its
safetensors file costs, and rebuilds as base + B @ A * scale.
"""

from __future__ import annotations

from pathlib import Path

from tvstore.blobs import BlobStore
from tvstore.checkpoint.digest import manifest_digest, tensor_digest
from tvstore.checkpoint.peft import Adapter, read_adapter
from tvstore.codecs.lossless import Lossless
from tvstore.codecs.lowrank import Lowrank, lowrank_payload_from_factors
from tvstore.tensors.codec_plan import CodecPlan
from tvstore.codecs.encoded import EncodedComponent
from tvstore.tensors.encode import DELTA, EncodedTensor, encode_delta, encode_extra
from tvstore.errors import InvalidCheckpointError
from tvstore.tensors.metrics import ErrorStats
from tvstore.util.progress import Progress, no_progress
from tvstore.ops.push import PendingVector, StoredTensor, store_tensor
from tvstore.tensors.sources import BaseSource


def _factor_tensor(module, base: BaseSource) -> EncodedTensor:
    info = base.info(module.target)
    shape = (module.b.shape[0], module.a.shape[1])
    if shape != info.shape:
        raise InvalidCheckpointError(
            f"LoRA factors for {module.target!r} give shape {list(shape)}, base {base.base.name!r} has {list(info.shape)}"
        )
    codec = Lowrank(rank=module.a.shape[0])
    payload = lowrank_payload_from_factors(module.b.float(), module.a.float(), module.scale)
    decoded = codec.decode(payload, info.shape, info.dtype)
    config = codec.get_config()
    return EncodedTensor(module.target, DELTA, info.dtype, info.shape, config, [EncodedComponent(config, payload)],
                         ErrorStats.of(decoded, decoded))


def _whole_tensors(adapter: Adapter, base: BaseSource, allow_extra: bool) -> list[EncodedTensor]:
    """modules_to_save (e.g. a new head): deltas where the base has the tensor, extras where not."""
    out = []
    for name, value in adapter.others.items():
        if name in base:
            b = base.get(name)
            out.append(encode_delta(name, value.to(b.dtype) - b, Lossless(), exact_target=(value.to(b.dtype), b)))
        elif allow_extra:
            out.append(encode_extra(name, value))
        else:
            raise InvalidCheckpointError(
                f"{adapter.path}: tensor {name!r} is not in base {base.base.name!r}; pass --extra to store it with the vector"
            )
    return out


def push_adapter(
    name: str, path: Path, base: BaseSource, blobs: BlobStore, allow_extra: bool = False, progress: Progress = no_progress
) -> PendingVector:
    adapter = read_adapter(path, set(base.names()))
    if not adapter.modules and not adapter.others:
        raise InvalidCheckpointError(f"{path}: the adapter holds no tensors")
    pending = PendingVector(name, base.base.name, "lora", CodecPlan(), codec_config={"id": "lowrank", "source": "peft"})
    stored: list[StoredTensor] = []
    with progress(f"pushing adapter {name}", len(adapter.modules) + len(adapter.others)) as advance:
        for encoded in [*(_factor_tensor(m, base) for m in adapter.modules), *_whole_tensors(adapter, base, allow_extra)]:
            stored.append(store_tensor(encoded, blobs))
            advance(1)
    order = {n: i for i, n in enumerate(base.names())}
    pending.tensors = sorted(stored, key=lambda t: (t.role != DELTA, order.get(t.name, len(order))))
    digests = [(f"{m.target}:B", tensor_digest(m.b)) for m in adapter.modules]
    digests += [(f"{m.target}:A", tensor_digest(m.a)) for m in adapter.modules]
    pending.source_digest = manifest_digest(digests + [(n, tensor_digest(v)) for n, v in adapter.others.items()])
    return pending
