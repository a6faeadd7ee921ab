"""Turn one tensor of a fine-tune into stored components, and measure what it cost.

Pure: no database, no blob store. The push pipeline feeds it tensors and
stores what it returns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from tvstore.codecs import Codec
from tvstore.codecs.lossless import Lossless
from tvstore.codecs.masks import encode_mask
from tvstore.codecs.raw import Raw
from tvstore.tensors.codec_plan import AutoCodec
from tvstore.codecs.encoded import ADD, FIX, EncodedComponent
from tvstore.errors import InvalidCheckpointError
from tvstore.tensors.metrics import ErrorStats

# roles of a vector's tensors: a delta against the base, a tensor of its own, or a
# base buffer the fine-tune did not have (no data; a rebuild leaves it out)
DELTA, EXTRA, ABSENT = "delta", "extra", "absent"
_LOSSLESS = Lossless()
_RAW = Raw()


@dataclass
class EncodedTensor:
    name: str
    role: str  # DELTA or EXTRA
    dtype: torch.dtype
    shape: tuple[int, ...]
    codec: dict
    components: list[EncodedComponent]
    stats: ErrorStats = field(default_factory=ErrorStats)

    @property
    def raw_bytes(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n * self.dtype.itemsize

    @property
    def stored_bytes(self) -> int:
        return sum(len(c.payload) + len(c.mask or b"") for c in self.components)


def _bits(t: torch.Tensor) -> torch.Tensor:
    ints = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
    return t.contiguous().view(ints[t.element_size()])


def exactness_fix(target: torch.Tensor, base: torch.Tensor, tau: torch.Tensor) -> EncodedComponent | None:
    """A ``fix`` component for the entries where ``base + tau`` misses ``target`` bitwise.

    Float addition does not always undo subtraction (bf16 rounding, signed
    zeros); the few entries it misses are recorded so rebuilding a pushed
    fine-tune is bit-exact.
    """
    rebuilt = base + tau
    if torch.equal(_bits(rebuilt), _bits(target)):  # the usual case: one comparison pass, no mask
        return None
    miss = _bits(rebuilt) != _bits(target)
    # only the missed entries, in order (a raw fix; older pushes stored a dense lossless tensor, still read)
    return EncodedComponent(_RAW.get_config(), _RAW.encode(target[miss]), mask=encode_mask(miss), kind=FIX)


def check_finite(name: str, tensor: torch.Tensor, what: str, sum_of_squares: float | None = None) -> None:
    """Refuse NaN/Inf. A finite float64 sum of squares (often computed anyway) proves it in no extra pass."""
    if not tensor.is_floating_point():
        return
    if sum_of_squares is None:
        sum_of_squares = float(torch.sum(tensor.float() * tensor.float(), dtype=torch.float64))
    if math.isfinite(sum_of_squares):
        return
    bad = int((~torch.isfinite(tensor)).sum())
    raise InvalidCheckpointError(f"tensor {name!r}: {what} has {bad} NaN/Inf value(s)")


def encode_delta(
    name: str, tau: torch.Tensor, codec: Codec | AutoCodec, exact_target: tuple[torch.Tensor, torch.Tensor] | None = None
) -> EncodedTensor:
    """Encode ``tau``; with ``exact_target=(target, base)`` an exact codec also gets a fix-up."""
    exact_stats = ErrorStats.of(tau, tau)
    check_finite(name, tau, "the delta", exact_stats.ref_sq)
    if isinstance(codec, AutoCodec):  # the choice already decoded and measured its pick
        codec, payload, chosen_stats = codec.choose(tau)
        stats = exact_stats if codec.exact else chosen_stats
    else:
        payload = codec.encode(tau)
        decoded = tau if codec.exact else codec.decode(payload, tuple(tau.shape), tau.dtype)
        stats = exact_stats if codec.exact else ErrorStats.of(tau, decoded)
    components = [EncodedComponent(codec.get_config(), payload, kind=ADD)]
    if codec.exact and exact_target is not None:  # exact codecs decode to tau itself
        fix = exactness_fix(exact_target[0], exact_target[1], tau)
        if fix is not None:
            components.append(fix)
    return EncodedTensor(name, DELTA, tau.dtype, tuple(tau.shape), codec.get_config(), components, stats)


def encode_extra(name: str, tensor: torch.Tensor) -> EncodedTensor:
    """A tensor the base lacks (a task head): stored whole and exact."""
    stats = ErrorStats.of(tensor, tensor)
    check_finite(name, tensor, "the extra tensor", stats.ref_sq)
    payload = _LOSSLESS.encode(tensor)
    comp = EncodedComponent(_LOSSLESS.get_config(), payload)
    return EncodedTensor(
        name, EXTRA, tensor.dtype, tuple(tensor.shape), _LOSSLESS.get_config(), [comp], stats
    )
