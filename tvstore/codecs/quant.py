"""TVQ: asymmetric min-max quantization of a task vector, truly bit-packed.

Per group of entries (the whole tensor, one output channel = one slice along
dim 0, or ``group_size`` consecutive entries of the flattened tensor):

    s = (2^b - 1) / (max - min)      stored as float32, rounded *down*
    z = -round(s * min)               stored as an integer
    q = clamp(round(s * x + z), 0, 2^b - 1)
    x_hat = (q - z) / s

Rounding ``s`` down keeps every ``s*x + z`` inside ``[-1/2, 2^b - 1/2]``, so
clamping never costs more than rounding and the promised bound holds for
every entry: ``|x - x_hat| <= 1/(2s)`` plus the final rounding of ``x_hat``
to float32 and then to the tensor's dtype. A constant group uses
``s = 1/|min|`` (or 1 for zeros), which reproduces it up to that rounding.

Encoding works in float64 (so any fp32 range, up to +-3.4e38, is fine);
decoding is two whole-array float32 operations after unpacking the codes
(float64 only when some ``|z|`` is too large for float32 to hold ``q - z``
exactly), so it is bit-identical on every machine. A one-group tensor has
only ``2^b`` distinct values: they are computed that way once, and its codes
look them up (:func:`tvstore.codecs.bitpack.lookup`; at 1, 2, 4 or 8 bits each
packed byte looks up all its codes' values at once), the same bits in one or
two passes over memory instead of five.

``clip="mse"`` (error-optimal ranges): min-max ranges spend most levels on a
few outliers of a heavy-tailed delta. With ``clip="mse"`` each group's range
is shrunk towards zero, ``[a + r (lo - a), a + r (hi - a)]`` with ``a`` the
point of ``[lo, hi]`` nearest 0, and ``r`` taken from the grid
``0.85^k, k = 0..20`` (1 down to 0.039) as the one with the smallest summed
squared error of the group (a grid search over clip ratios, as in
AWQ/OmniQuant's clipping search; ACIQ's closed form assumes a Laplace or
Gaussian shape, the search does not). The payload format is unchanged (the
decoder reads ``s`` and ``z`` whatever chose them), so ``clip`` only changes
encoding; ``clip="minmax"`` (the default) is the min-max codec above, and
the ``1/(2s)`` bound then holds only for entries inside the clipped range.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterator

import numpy as np
import torch

from tvstore.codecs import bitpack, buffers, framing, planes
from tvstore.codecs.base import Codec, Shape, param, register_codec
from tvstore.util.bounds import POSITIVE_INT, Bounds

_VERSION = 1
_GRANULARITIES = ("tensor", "channel", "group")
_HEADER = struct.Struct("<BBQQQ")  # bits, granularity index, n, groups, group width
_F32_MAX = float(np.finfo(np.float32).max)
_F32_EXACT = 1 << 24
CLIPS = ("minmax", "mse")
#: clip ratios ``clip="mse"`` tries (1.0 first, so a tie keeps the min-max range)
CLIP_RATIOS = 0.85 ** np.arange(21)
#: widest group measured entry by entry when choosing a clip; wider groups are sampled with a stride
_CLIP_SAMPLE = 1 << 16
#: entries quantized per block: the block's float64 temporaries stay in cache, and blocks are few enough
#: per tensor that their calls' Python overhead stays small (as :data:`tvstore.tensors.metrics.CHUNK`)
_BLOCK = 1 << 17
#: zstd level of the sections. Packed codes are short symbols with little repetition: on the 4-bit
#: codes of a bf16 delta (the 168M benchmark's embedding) level 1 packed to 50.0% at 447 MB/s, level 3
#: (the default until then) to 54.0% at 136 MB/s. Decoding does not depend on the level.
_ZSTD_LEVEL = 1


@dataclasses.dataclass(frozen=True)
class QuantParams:
    """Per-group scale ``s`` (float32) and zero point ``z`` (int64)."""

    s: np.ndarray
    z: np.ndarray


def group_view_shape(shape: Shape, granularity: str, group_size: int) -> tuple[int, int]:
    """(groups, entries per group) of the flattened tensor; the last group is padded."""
    n = int(np.prod(shape)) if shape else 1
    if granularity == "tensor" or n == 0:
        return 1, n
    if granularity == "channel":
        rows = shape[0] if len(shape) >= 2 else 1  # a 1-D tensor is one channel
        return rows, n // rows if rows else 0
    return -(-n // group_size), group_size


def min_max_params(x: np.ndarray, bits: int) -> QuantParams:
    """s and z per row of ``x`` (float64, shape (groups, width))."""
    return range_params(x.min(axis=1), x.max(axis=1), bits)


def range_params(lo: np.ndarray, hi: np.ndarray, bits: int) -> QuantParams:
    """s and z per group mapping ``[lo, hi]`` (float64 per group) onto the codes 0..2^b - 1."""
    levels = (1 << bits) - 1
    span = hi - lo
    with np.errstate(divide="ignore"):
        flat = np.where(lo != 0, 1.0 / np.abs(lo), 1.0)
        s = np.where(span > 0, levels / np.where(span > 0, span, 1.0), flat)
    s = np.minimum(s, _F32_MAX)
    s32 = s.astype(np.float32)
    s32 = np.where(s32.astype(np.float64) > s, np.nextafter(s32, np.float32(0)), s32).astype(np.float32)
    z = -np.rint(s32.astype(np.float64) * lo).astype(np.int64)
    return QuantParams(s32, z)


def mse_params(x: np.ndarray, bits: int) -> QuantParams:
    """s and z per row of ``x`` whose clipped range has the least squared error over :data:`CLIP_RATIOS`.

    Error is measured in float64 against the float64 dequantization; groups
    wider than 65,536 entries are judged on an evenly strided sample of them.
    """
    lo, hi = x.min(axis=1), x.max(axis=1)
    anchor = np.clip(0.0, lo, hi)
    step = -(-x.shape[1] // _CLIP_SAMPLE)
    probe = x[:, ::step]
    best, best_err = min_max_params(x, bits), None
    work = np.empty_like(probe)
    for ratio in CLIP_RATIOS:
        params = range_params(anchor + ratio * (lo - anchor), anchor + ratio * (hi - anchor), bits)
        err = _squared_error(probe, params, bits, work)
        if best_err is None:
            best, best_err = params, err
            continue
        better = err < best_err
        best = QuantParams(np.where(better, params.s, best.s), np.where(better, params.z, best.z))
        best_err = np.where(better, err, best_err)
    return best


def _squared_error(x: np.ndarray, params: QuantParams, bits: int, work: np.ndarray) -> np.ndarray:
    """Per row, sum (x - x_hat)^2 under ``params``: :func:`quantize` then dequantize, in place in ``work``."""
    s = params.s.astype(np.float64)[:, None]
    z = params.z.astype(np.float64)[:, None]
    np.multiply(x, s, out=work)
    work += z
    np.rint(work, out=work)
    np.clip(work, 0, (1 << bits) - 1, out=work)
    work -= z
    work /= s
    work -= x
    work *= work
    return work.sum(axis=1)


def quantize(x: np.ndarray, params: QuantParams, bits: int) -> np.ndarray:
    """uint8 codes of ``x`` (float64, (groups, width)) under ``params``."""
    s = params.s.astype(np.float64)[:, None]
    q = np.rint(s * x + params.z.astype(np.float64)[:, None])
    return np.clip(q, 0, (1 << bits) - 1).astype(np.uint8)


def _padded64(flat: torch.Tensor, groups: int, width: int) -> np.ndarray:
    """The (groups, width) float64 view of ``flat``, its last group padded with its last entry."""
    x = flat.to(torch.float64).numpy()
    if groups * width != x.size:
        x = np.pad(x, (0, groups * width - x.size), mode="edge")
    return x.reshape(groups, width)


def group_ranges(flat: torch.Tensor, groups: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(min, max) per group as float64, read in the tensor's own dtype (exact: widening is monotone).

    Padding the last group with its last entry changes neither, so the
    partial group is measured as it is. NaN entries make their group's range NaN.
    """
    full = min(groups, flat.numel() // width) if width else 0
    lo, hi = np.empty(groups), np.empty(groups)
    if full == 1:  # one whole group: the flat reduction runs ~25x faster than one along a dimension
        mins, maxs = torch.aminmax(flat[:width])
        lo[0], hi[0] = float(mins), float(maxs)
    elif full:
        mins, maxs = torch.aminmax(flat[: full * width].view(full, width), dim=1)
        lo[:full], hi[:full] = mins.double().numpy(), maxs.double().numpy()
    if full < groups:
        mins, maxs = torch.aminmax(flat[full * width :])
        lo[full], hi[full] = float(mins), float(maxs)
    return lo, hi


def _row_blocks(groups: int, width: int) -> Iterator[tuple[slice, slice]]:
    """(rows, columns) blocks of a (groups, width) array, about :data:`_BLOCK` entries each."""
    if width >= _BLOCK:
        for row in range(groups):
            for start in range(0, width, _BLOCK):
                yield slice(row, row + 1), slice(start, min(width, start + _BLOCK))
        return
    rows = max(1, _BLOCK // width)
    for start in range(0, groups, rows):
        yield slice(start, min(groups, start + rows)), slice(0, width)


def quantize_blocks(flat: torch.Tensor, groups: int, width: int, params: QuantParams, bits: int) -> np.ndarray:
    """:func:`quantize` of the padded (groups, width) float64 view, one cache-sized block at a time.

    The same float64 operations entry by entry, so the same codes; but no
    float64 copy of the tensor (4x a bf16 tensor) and its temporaries, which
    cost more time in memory traffic than the arithmetic.
    """
    codes = np.empty((groups, width), dtype=np.uint8)
    full = flat.numel() // width
    for rows, cols in _row_blocks(groups, width):
        if rows.stop <= full:
            grid = flat[rows.start * width : rows.stop * width].view(rows.stop - rows.start, width)
            x = grid[:, cols].to(torch.float64).numpy()
        else:  # the padded last group (tiny)
            x = _padded64(flat[rows.start * width :], rows.stop - rows.start, width)[:, cols]
        codes[rows, cols] = quantize(x, QuantParams(params.s[rows], params.z[rows]), bits)
    return codes


def _exact32(params: QuantParams, bits: int) -> bool:
    """Whether float32 holds every ``q - z`` exactly (else :func:`dequantize` works in float64)."""
    return params.z.size == 0 or int(np.abs(params.z).max()) + (1 << bits) < _F32_EXACT


def dequantize(codes: torch.Tensor, params: QuantParams, bits: int, exact32: bool | None = None) -> torch.Tensor:
    """float32 (q - z) / s per row of ``codes`` ((groups, width) uint8).

    ``exact32``: the whole tensor's :func:`_exact32`, for a caller passing a block of its rows.
    """
    exact32 = _exact32(params, bits) if exact32 is None else exact32
    work = torch.float32 if exact32 else torch.float64
    z = torch.from_numpy(params.z).to(work)[:, None]
    s = torch.from_numpy(params.s).to(work)[:, None]
    out = buffers.convert(codes, work).sub_(z).div_(s)
    return out if exact32 else buffers.convert(out, torch.float32)


@register_codec
@dataclasses.dataclass(frozen=True)
class Quant(Codec):
    """``bits`` in 1..8 (TVQ uses 8/4/3/2); ``granularity`` tensor|channel|group; ``clip`` minmax|mse."""

    codec_id = "quant"
    keeps_payload = False
    bits: int = param(4, Bounds(int, 1, 8))
    granularity: str = "tensor"
    group_size: int = param(128, POSITIVE_INT)
    clip: str = "minmax"

    def validate(self) -> None:
        if self.granularity not in _GRANULARITIES:
            raise ValueError(f"granularity must be one of {', '.join(_GRANULARITIES)}, got {self.granularity!r}")
        if self.clip not in CLIPS:
            raise ValueError(f"clip must be one of {', '.join(CLIPS)}, got {self.clip!r}")

    def encode(self, tensor: torch.Tensor) -> bytes:
        flat = tensor.detach().contiguous().reshape(-1)
        groups, width = group_view_shape(tuple(tensor.shape), self.granularity, self.group_size)
        if flat.numel() == 0:
            return bitpack.ZERO_PAYLOAD
        lo, hi = group_ranges(flat, groups, width)
        if not (np.isfinite(lo).all() and np.isfinite(hi).all()):  # amin/amax propagate NaN
            raise ValueError("quant cannot encode inf or nan entries")
        if not (lo.any() or hi.any()):
            return bitpack.ZERO_PAYLOAD
        if self.clip == "mse":
            params = mse_params(_padded64(flat, groups, width), self.bits)
        else:
            params = range_params(lo, hi, self.bits)
        codes = quantize_blocks(flat, groups, width, params, self.bits)
        header = _HEADER.pack(self.bits, _GRANULARITIES.index(self.granularity), flat.numel(), groups, width)
        sections = [bitpack.pack_bits(codes, self.bits)]
        sections += planes.split_planes(params.s.view(np.uint32)) + planes.split_planes(params.z.view(np.uint64))
        return framing.pack(_VERSION, header, sections, level=_ZSTD_LEVEL)

    def decode_blocks(self, data: bytes, shape: Shape, dtype: torch.dtype) -> Iterator[torch.Tensor]:
        """:meth:`decode`'s entries in order, a block at a time (see :func:`decoded_blocks`)."""
        return decoded_blocks(data, shape, dtype)

    def decode_into(self, data: bytes, out: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """A one-group tensor's codes looked up straight into ``out`` as ``out.dtype``: one pass, no copy.

        The table holds each value decoded as ``dtype`` and then converted, so
        ``out`` gets exactly ``decode(...)`` converted (a bf16 vector into a merge's fp32 buffer).
        """
        if data == bitpack.ZERO_PAYLOAD or not (out.is_contiguous() and out.is_floating_point()):
            return super().decode_into(data, out, dtype)
        (bits, n, groups, width), codes_bytes, params = _read(data)
        _check_count(n, tuple(out.shape))
        if groups != 1:
            return out.copy_(_dequantized(codes_bytes, bits, groups, width, n, params, dtype).reshape(out.shape))
        bitpack.lookup(codes_bytes, bits, n, _table(bits, params, dtype, out.dtype), out=planes.as_uint(out))
        return out

    def decode(self, data: bytes, shape: Shape, dtype: torch.dtype) -> torch.Tensor:
        if data == bitpack.ZERO_PAYLOAD:
            return torch.zeros(shape, dtype=dtype)
        (bits, n, groups, width), codes_bytes, params = _read(data)
        _check_count(n, shape)
        if groups == 1:  # 2**bits values in all: looked up
            return decode_by_table(codes_bytes, bits, n, params, dtype).reshape(shape)
        return _dequantized(codes_bytes, bits, groups, width, n, params, dtype).reshape(shape)


def _dequantized(packed: bytes, bits: int, groups: int, width: int, n: int, params: QuantParams,
                 dtype: torch.dtype) -> torch.Tensor:
    """A many-group tensor's ``n`` entries (flat): codes unpacked, then :func:`dequantize` per group."""
    codes = torch.from_numpy(bitpack.unpack_bits(packed, bits, groups * width)).reshape(groups, width)
    return buffers.convert(dequantize(codes, params, bits).reshape(-1)[:n], dtype)


def _table(bits: int, params: QuantParams, dtype: torch.dtype, output: torch.dtype | None = None) -> np.ndarray:
    """A one-group tensor's ``2**bits`` values as the bits of ``dtype`` (then ``output``, if given), by code.

    Computed by :func:`dequantize` and converted to ``dtype`` exactly as the
    whole-array path computes every entry, so lookups in this table are
    bit-identical to it; the array work shrinks from five passes (unpack,
    widen, subtract, divide, narrow) to one or two (:func:`tvstore.codecs.bitpack.lookup`).
    """
    levels = torch.arange(1 << bits, dtype=torch.uint8).reshape(1, -1)
    values = buffers.convert(dequantize(levels, params, bits), dtype)
    return planes.as_uint(values if output is None else values.to(output))


def decode_by_table(packed: bytes, bits: int, n: int, params: QuantParams, dtype: torch.dtype) -> torch.Tensor:
    """A one-group tensor's entries (flat), each looked up in :func:`_table`."""
    return planes.from_uint(bitpack.lookup(packed, bits, n, _table(bits, params, dtype)), (n,), dtype)


def decoded_blocks(data: bytes, shape: Shape, dtype: torch.dtype) -> Iterator[torch.Tensor]:
    """``Quant.decode(data, shape, dtype).reshape(-1)``, a cache-sized block after another: the same values.

    For measuring an encoding's error as it is made: no float32 copy of the
    whole tensor (2x a bf16 tensor) beside the tensor being encoded.
    """
    if data == bitpack.ZERO_PAYLOAD:
        yield torch.zeros(int(np.prod(shape)) if shape else 1, dtype=dtype)
        return
    (bits, n, groups, width), codes_bytes, params = _read(data)
    _check_count(n, shape)
    if groups == 1:  # a block's codes looked up (_BLOCK is a multiple of 8: blocks start on a byte)
        table, packed = _table(bits, params, dtype), np.frombuffer(codes_bytes, dtype=np.uint8)
        for start in range(0, n, _BLOCK):
            count = min(_BLOCK, n - start)
            block = packed[start * bits // 8 : bitpack.packed_size(start + count, bits)]
            yield planes.from_uint(bitpack.lookup(block, bits, count, table), (count,), dtype)
        return
    codes = torch.from_numpy(bitpack.unpack_bits(codes_bytes, bits, groups * width)).reshape(groups, width)
    exact32, done = _exact32(params, bits), 0
    for rows, cols in _row_blocks(groups, width):
        block = dequantize(codes[rows, cols], QuantParams(params.s[rows], params.z[rows]), bits, exact32).reshape(-1)
        take = min(block.numel(), n - done)  # the last group's padding is no entry
        yield buffers.convert(block[:take], dtype)
        done += take


def _check_count(n: int, shape: Shape) -> None:
    expected = int(np.prod(shape)) if shape else 1
    if n != expected:
        raise ValueError(f"quant payload holds {n} entries, shape {shape} needs {expected}")


def _read(data: bytes) -> tuple[tuple[int, int, int, int], bytes, QuantParams]:
    version, header, sections = framing.unpack(data)
    if version != _VERSION:
        raise ValueError(f"quant payload version {version} is newer than this tvstore")
    bits, _, n, groups, width = _HEADER.unpack(header)
    s = planes.join_planes(sections[1:5], 4).view(np.float32)
    z = planes.join_planes(sections[5:13], 8).view(np.int64)
    return (bits, n, groups, width), sections[0], QuantParams(s, z)
