"""Pack: re-encode a group of task vectors of one base into a shared form.

RTVQ (a shared quantized mean plus per-task offsets), TALL (one multi-task
vector plus a bit mask per task) and EMR (one unified vector plus a mask and
a rescaler per task) all store a part once for the whole group; content
addressing does the sharing, since every task's component points at the same
blob. Each vector gets a new version (lineage: compressed-from its old one);
the old versions stay until removed.

Work goes one tensor name at a time across the group, so memory holds the T
task vectors of one tensor, never whole models. RTVQ under a bit budget makes
one extra pass to measure every tensor's options before allocating bits;
``mixed`` under a budget does the same across codecs (RTVQ pairs, TALL,
per-task sign, quant and mixed-precision SVD; :mod:`tvstore.ops.pack_mixed`).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from tvstore.blobs import BlobStore
from tvstore.codecs.spec import parse_codec_spec, split_codec_spec
from tvstore.codecs.emr import emr_pack
from tvstore.codecs.quant import CLIPS
from tvstore.codecs.rtvq import DEFAULT_PAIRS, Candidate, choose_pairs, rtvq_candidates, rtvq_pack
from tvstore.codecs.tall import DEFAULT_LAMBDA, tall_pack
from tvstore.tensors.codec_plan import CodecPlan
from tvstore.codecs.encoded import EncodedComponent
from tvstore.tensors.components import delta_of_encoded
from tvstore.tensors.encode import DELTA, EncodedTensor, encode_extra
from tvstore.errors import CodecError, UsageError
from tvstore.tensors.metrics import ErrorStats
from tvstore.util.bounds import POSITIVE_INT, Bounds
from tvstore.util.progress import Progress, no_progress
from tvstore.ops.pack_mixed import measure, options
from tvstore.ops.push import PendingVector, store_tensor
from tvstore.tensors.sources import VectorSource

PACKERS = ("rtvq", "tall", "emr", "mixed")

Packer = Callable[[list[torch.Tensor], str], list[list[EncodedComponent]]]


@dataclass(frozen=True)
class PackSpec:
    """What ``tvstore pack --codec ...`` asked for, checked before any tensor is read."""

    codec: str
    params: dict[str, Any] = field(default_factory=dict)

    def config(self) -> dict[str, Any]:
        return {"id": self.codec, **self.params}

    @classmethod
    def parse(cls, spec: str, **overrides: Any) -> PackSpec:
        """``rtvq:bits=2.5`` (the codec spec grammar) plus options such as ``--lambda`` (each key once)."""
        try:
            codec_id, params = split_codec_spec(spec)
        except CodecError as exc:
            raise UsageError(str(exc)) from None
        if codec_id not in PACKERS:
            raise UsageError(f"pack codec must be one of {', '.join(PACKERS)}, got {codec_id!r}")
        for key, value in overrides.items():
            if value is None:
                continue
            if key in params:
                raise UsageError(f"pack parameter {key!r} given twice (in --codec and as an option)")
            params[key] = value
        return cls(codec_id, _checked(codec_id, params))


#: each pack codec's parameters: a numeric range, a tuple of choices, or ``"spec"`` (a codec spec)
_PARAMS: dict[str, dict[str, Bounds | tuple[str, ...] | str]] = {
    "rtvq": {"bits": Bounds(float, 0, 16, lo_open=True), "base_bits": Bounds(int, 1, 8),
             "offset_bits": Bounds(int, 1, 8), "granularity": ("tensor", "channel", "group"),
             "group_size": POSITIVE_INT, "clip": CLIPS},
    "tall": {"lambda": Bounds(float, 0, 1), "shared": "spec"},
    "emr": {"shared": "spec"},
    "mixed": {"bits": Bounds(float, 0, 16, lo_open=True)},
}


def _checked(codec: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` if every one is known and in range; ``UsageError`` naming the first that is not."""
    known = _PARAMS[codec]
    for key, value in params.items():
        rule = known.get(key)
        if rule is None:
            raise UsageError(f"pack codec {codec!r} has no parameter {key!r} (parameters: {', '.join(known)})")
        if isinstance(rule, Bounds) and not rule.contains(value):
            raise UsageError(f"pack {codec}: {key} must be {rule.describe()}, got {value!r}")
        if isinstance(rule, tuple) and value not in rule:
            raise UsageError(f"pack {codec}: {key} must be one of {', '.join(rule)}, got {value!r}")
        if rule == "spec":
            parse_codec_spec(str(value))  # a bad shared codec is refused here, before any tensor is read
    if codec == "rtvq" and "bits" in params and ("base_bits" in params or "offset_bits" in params):
        raise UsageError("give rtvq either a budget (bits) or fixed base_bits/offset_bits, not both")
    if codec == "mixed" and "bits" not in params:
        raise UsageError("pack mixed needs a budget: bits=B (bits per parameter per task), e.g. mixed:bits=0.5")
    return params


def check_group(sources: Sequence[VectorSource]) -> list[str]:
    """The delta tensor names every vector of the group has; refuse groups that do not fit together."""
    if len(sources) < 2:
        raise UsageError("pack needs at least two task vectors")
    labels = [s.label for s in sources]
    if len(set(s.vector.name for s in sources)) != len(sources):
        raise UsageError(f"pack each task vector once (got {', '.join(labels)})")
    bases = {s.vector.base.name for s in sources}
    if len(bases) > 1:
        raise UsageError(f"pack needs task vectors of one base, got {', '.join(sorted(bases))}")
    names = [n for n in sources[0].names() if not sources[0].is_extra(n)]
    for s in sources[1:]:
        mine = [n for n in s.names() if not s.is_extra(n)]
        if mine != names:
            odd = next(iter(set(mine) ^ set(names)), "?")
            raise UsageError(f"{s.label} and {sources[0].label} do not have the same delta tensors (e.g. {odd!r})")
    return names


def _packer(spec: PackSpec, choice: dict[str, Hashable]) -> Packer:
    p = spec.params
    if spec.codec == "mixed":
        packers = options()
        return lambda taus, name: packers[str(choice[name])](taus)
    if spec.codec == "rtvq":
        gran, gsize, clip = p.get("granularity", "tensor"), p.get("group_size", 128), p.get("clip", "minmax")
        fixed = (p.get("base_bits", 3), p.get("offset_bits", 2))
        return lambda taus, name: rtvq_pack(taus, *choice.get(name, fixed), gran, gsize, clip)
    shared = parse_codec_spec(str(p["shared"])) if "shared" in p else None
    if spec.codec == "tall":
        return lambda taus, name: tall_pack(taus, p.get("lambda", DEFAULT_LAMBDA), shared)
    return lambda taus, name: emr_pack(taus, shared)


def _measure(spec: PackSpec) -> Callable[[list[torch.Tensor]], list[Candidate]]:
    """How one tensor's options are measured under a budget: RTVQ's bit pairs, or every mixed option."""
    if spec.codec == "mixed":
        packers = options()
        return lambda taus: measure(taus, packers)
    p = spec.params
    gran, gsize, clip = p.get("granularity", "tensor"), p.get("group_size", 128), p.get("clip", "minmax")
    return lambda taus: rtvq_candidates(taus, DEFAULT_PAIRS, gran, gsize, clip)


def allocate(sources: Sequence[VectorSource], names: list[str], spec: PackSpec, progress: Progress) -> dict[str, Hashable]:
    """Under a budget (rtvq or mixed with ``bits``): measure each tensor's options, then allocate bits.

    The measured error per stored bit decides where the budget goes (see
    :func:`tvstore.codecs.rtvq.allocate_bits`); returns each tensor's choice.
    """
    if spec.codec not in ("rtvq", "mixed") or "bits" not in spec.params:
        return {}
    measure_one = _measure(spec)
    cands, sizes = {}, {}
    with progress("measuring each tensor's options", len(names)) as advance:
        for name in names:
            taus = [s.get(name) for s in sources]
            cands[name] = measure_one(taus)
            sizes[name] = taus[0].numel()
            advance(1)
    try:
        return choose_pairs(cands, sizes, len(sources), spec.params["bits"])
    except ValueError as exc:
        raise UsageError(f"{spec.codec}: {exc}") from None


def tensor_codec(spec: PackSpec, choice: Hashable | None) -> dict[str, Any]:
    """What a packed tensor records as its codec: the pack codec and, under a budget, its choice."""
    if choice is None:
        return {"id": spec.codec}
    return {"id": spec.codec, **({"choice": choice} if spec.codec == "mixed" else {"bits": list(choice)})}


def _shared_payloads(per_task: list[list[EncodedComponent]]) -> set[bytes]:
    """Payloads every task's components contain: stored once for the group."""
    sets = [{c.payload for c in comps} for comps in per_task]
    return set.intersection(*sets) if len(sets) > 1 else set()


def _amortized_bytes(comps: list[EncodedComponent], shared: set[bytes], tasks: int) -> int:
    """A task's share of what the group stores: its own parts, plus 1/T of the shared ones."""
    own = sum(len(c.payload) for c in comps if c.payload not in shared) + sum(len(c.mask or b"") for c in comps)
    return own + round(sum(len(c.payload) for c in comps if c.payload in shared) / tasks)


def pack_group(
    sources: Sequence[VectorSource], blobs: BlobStore, spec: PackSpec, progress: Progress = no_progress
) -> list[PendingVector]:
    """One pending new version per source vector, sharing blobs where the codec shares parts."""
    names = check_group(sources)
    choice = allocate(sources, names, spec, progress)
    packer = _packer(spec, choice)
    plan = CodecPlan()
    pending = [PendingVector(s.vector.name, s.vector.base.name, "packed", plan, codec_config=spec.config()) for s in sources]
    with progress(f"packing {len(sources)} vectors ({spec.codec})", len(names)) as advance:
        for name in names:
            taus = [s.get(name) for s in sources]
            per_task = packer(taus, name)
            shared = _shared_payloads(per_task)
            for pend, tau, comps in zip(pending, taus, per_task, strict=True):
                shape = tuple(tau.shape)
                approx = delta_of_encoded(comps, shape, tau.dtype)
                codec = tensor_codec(spec, choice.get(name))
                enc = EncodedTensor(name, DELTA, tau.dtype, shape, codec, comps, ErrorStats.of(tau, approx))
                stored = store_tensor(enc, blobs)
                stored.stored_bytes = _amortized_bytes(comps, shared, len(sources))
                pend.tensors.append(stored)
            advance(1)
    for pend, source in zip(pending, sources):
        for name in (n for n in source.names() if source.is_extra(n)):
            pend.tensors.append(store_tensor(encode_extra(name, source.get(name)), blobs))
    return pending
