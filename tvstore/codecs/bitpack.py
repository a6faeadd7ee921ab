"""Dense bit packing of small unsigned ints, and coding of support positions.

Quantized codes of b bits must cost b bits each (the TVQ reference code spends
a whole byte per code). Every group of 8 codes of ``b`` bits fills exactly
``b`` bytes, so packing works on groups: the 8 codes of a group are combined
into one integer word, whose ``b`` low bytes are written big-endian. All of
it is a handful of whole-array numpy operations, never a loop over elements.

Support positions (which entries a sparse or ternary tensor keeps) are coded
whichever of three ways is smallest after zstd: a bitmap (dense supports),
varint-coded gaps, or fixed-width gaps (sparse supports).
"""

from __future__ import annotations

import struct

import numpy as np
import zstandard

from tvstore.codecs.planes import UINT

#: first byte of a payload that stands for "the tensor is all zeros" (real
#: payloads start with a format version >= 1), so a zero tensor costs 1 byte.
ZERO_PAYLOAD = b"\x00"

_WORD = {1: np.uint8, 2: np.uint16, 3: np.uint32, 4: np.uint32}


def _zc(data: bytes, level: int = 3) -> bytes:
    return zstandard.ZstdCompressor(level=level).compress(data)


def _zd(data: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompress(data)


def packed_size(n: int, bits: int) -> int:
    """Bytes that ``n`` codes of ``bits`` bits occupy once packed."""
    return (n * bits + 7) // 8


def pack_bits(codes: np.ndarray, bits: int) -> bytes:
    """Pack unsigned ints < 2**bits (any integer dtype) densely, most significant bit first."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    codes = np.ascontiguousarray(codes, dtype=np.uint8).reshape(-1)
    n = codes.size
    if bits == 8:
        return codes.tobytes()
    if bits == 1:
        return np.packbits(codes, bitorder="big").tobytes()
    if bits in (2, 4):  # fast paths: codes never straddle a byte
        per = 8 // bits
        padded = np.zeros(-(-n // per) * per, dtype=np.uint8)
        padded[:n] = codes
        cols = padded.reshape(-1, per)
        out = cols[:, 0] << np.uint8(bits * (per - 1))
        for j in range(1, per):
            out |= cols[:, j] << np.uint8(bits * (per - 1 - j))
        return out.tobytes()
    groups = -(-n // 8)
    padded = np.zeros(groups * 8, dtype=np.uint8)
    padded[:n] = codes
    cols = padded.reshape(groups, 8)
    word_t = np.uint64 if bits > 4 else np.uint32
    word = np.zeros(groups, dtype=word_t)
    for j in range(8):  # 8 whole-column operations, not a loop over elements
        word |= cols[:, j].astype(word_t) << word_t(bits * (7 - j))
    width = np.dtype(word_t).itemsize
    as_bytes = word.astype(np.dtype(word_t).newbyteorder(">")).view(np.uint8).reshape(groups, width)
    return as_bytes[:, width - bits :].tobytes()[: packed_size(n, bits)]


def _packed(data: bytes | np.ndarray, bits: int, n: int) -> np.ndarray:
    """``data`` as a uint8 array, checked to hold ``n`` codes of ``bits`` bits (every reader's precondition)."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    raw = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else data
    if raw.size < packed_size(n, bits):
        raise ValueError(f"packed data holds {raw.size} bytes, {n} codes of {bits} bits need {packed_size(n, bits)}")
    return raw


def unpack_bits(data: bytes | np.ndarray, bits: int, n: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``n`` codes as a uint8 array."""
    raw = _packed(data, bits, n)
    if bits == 8:
        return raw[:n].copy()
    if bits == 1:
        return np.unpackbits(raw, count=n, bitorder="big")
    if bits in (2, 4):  # fast paths: codes never straddle a byte
        per = 8 // bits
        m = -(-n // per)
        src = raw[:m]
        out = np.empty((m, per), dtype=np.uint8)
        mask = np.uint8((1 << bits) - 1)
        for j in range(per):
            np.bitwise_and(src >> np.uint8(bits * (per - 1 - j)), mask, out=out[:, j])
        return out.reshape(-1)[:n]
    groups = -(-n // 8)
    buf = np.zeros(groups * bits, dtype=np.uint8)
    take = min(raw.size, groups * bits)
    buf[:take] = raw[:take]
    word_t = np.uint64 if bits > 4 else np.uint32
    width = np.dtype(word_t).itemsize
    wide = np.zeros((groups, width), dtype=np.uint8)
    wide[:, width - bits :] = buf.reshape(groups, bits)
    word = wide.view(np.dtype(word_t).newbyteorder(">")).reshape(-1).astype(word_t)
    out = np.empty((groups, 8), dtype=np.uint8)
    mask = word_t((1 << bits) - 1)
    for j in range(8):
        out[:, j] = (word >> word_t(bits * (7 - j))) & mask
    return out.reshape(-1)[:n]


#: entries per step of a table lookup (:func:`lookup`, the lossless top plane): the step's indices and
#: output stay in L2 cache, where ``np.take`` widening its indices to intp costs no memory traffic
LOOKUP_STEP = 1 << 15


def take_into(table: np.ndarray, indices: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out[:] = table[indices]`` for indices known to be in range (codes index tables of all their values).

    ``mode="clip"``: under numpy's default ``mode="raise"`` an ``out`` is always
    buffered, a second pass over it that made every 4-bit lookup about twice as
    slow (numpy's ``take`` documents it). In-range indices read the same entries either way.
    """
    return np.take(table, indices, out=out, mode="clip")


def lookup(data: bytes | np.ndarray, bits: int, n: int, values: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``values[unpack_bits(data, bits, n)]`` for any ``bits`` in 1..8, in cache-sized steps.

    Codes of 1, 2, 4 or 8 bits never straddle a byte, so each packed byte
    stands for ``8 // bits`` whole codes; a 256-entry table holds their values
    side by side, and one lookup per byte writes them all: no unpacked codes,
    no per-code arithmetic, memory speed. Other widths unpack a step of codes
    (8 codes fill ``bits`` whole bytes, so steps start on a byte) and look each
    up; a decoder whose codes index a handful of values (a one-group
    quantized tensor) never widens them to floats either way.

    ``out``: a contiguous 1-D array of ``values``' dtype and ``n`` entries to
    fill (a merge's input buffer) instead of a new one.
    """
    raw = _packed(data, bits, n)
    values = np.ascontiguousarray(values).reshape(-1)
    if values.size != 1 << bits:
        raise ValueError(f"{bits}-bit codes need {1 << bits} values, got {values.size}")
    if out is None:
        out = np.empty(n, dtype=values.dtype)
    elif out.shape != (n,) or out.dtype != values.dtype or not out.flags.c_contiguous:
        raise ValueError(f"lookup needs a contiguous output of {n} {values.dtype} entries, got {out.shape} {out.dtype}")
    if 8 % bits:
        return _lookup_unpacked(raw, bits, n, values, out)
    per = 8 // bits
    codes = (np.arange(256)[:, None] >> (bits * np.arange(per - 1, -1, -1))) & ((1 << bits) - 1)  # first code first
    entry = np.dtype(UINT.get(per * values.itemsize, f"V{per * values.itemsize}"))  # uints move ~10% faster
    table = np.ascontiguousarray(values[codes]).view(entry).reshape(256)
    whole = n // per  # packed bytes whose codes all land in ``out``; a last partial byte is looked up alone
    pairs = out[: whole * per].view(entry)
    for start in range(0, whole, LOOKUP_STEP):
        stop = min(whole, start + LOOKUP_STEP)
        take_into(table, raw[start:stop], pairs[start:stop])
    if whole * per < n:
        out[whole * per :] = values[codes[raw[whole]]][: n - whole * per]
    return out


def _lookup_unpacked(raw: np.ndarray, bits: int, n: int, values: np.ndarray, out: np.ndarray) -> np.ndarray:
    """:func:`lookup` for widths that straddle bytes: a step's codes unpacked, then looked up."""
    step = 8 * LOOKUP_STEP  # codes per step: a multiple of 8, so every step starts on a byte
    for start in range(0, n, step):
        count = min(step, n - start)
        first = start * bits // 8
        codes = unpack_bits(raw[first : first + packed_size(count, bits)], bits, count)
        take_into(values, codes, out[start : start + count])
    return out


# --- varints ---------------------------------------------------------------


def encode_varints(values: np.ndarray) -> bytes:
    """LEB128 (7 bits per byte, high bit = more follows) of non-negative ints, vectorized."""
    v = np.ascontiguousarray(values, dtype=np.uint64).reshape(-1)
    if v.size == 0:
        return b""
    nbytes = np.ones(v.size, dtype=np.int64)
    for k in range(1, 10):
        nbytes += v >= np.uint64(1 << (7 * k)) if 7 * k < 64 else 0
    ends = np.cumsum(nbytes)
    starts = ends - nbytes
    out = np.zeros(int(ends[-1]), dtype=np.uint8)
    for j in range(int(nbytes.max())):
        sel = nbytes > j
        chunk = ((v[sel] >> np.uint64(7 * j)) & np.uint64(0x7F)).astype(np.uint8)
        chunk |= np.where(nbytes[sel] > j + 1, np.uint8(0x80), np.uint8(0))
        out[starts[sel] + j] = chunk
    return out.tobytes()


def decode_varints(data: bytes) -> np.ndarray:
    """Inverse of :func:`encode_varints` (uint64 array)."""
    b = np.frombuffer(data, dtype=np.uint8)
    if b.size == 0:
        return np.zeros(0, dtype=np.uint64)
    last = (b & 0x80) == 0
    if not last[-1]:
        raise ValueError("varint stream truncated")
    ends = np.flatnonzero(last)
    starts = np.concatenate(([0], ends[:-1] + 1))
    value_id = np.repeat(np.arange(ends.size), ends - starts + 1)
    shift = (np.arange(b.size) - starts[value_id]).astype(np.uint64) * np.uint64(7)
    contrib = (b & 0x7F).astype(np.uint64) << shift
    return np.add.reduceat(contrib, starts)


# --- support (index) coding ------------------------------------------------

BITMAP, VARINT_GAPS, FIXED_GAPS = 0, 1, 2
_IDX_HEADER = struct.Struct("<BQQB")  # mode, n, k, fixed width


def _gaps(positions: np.ndarray) -> np.ndarray:
    """Gaps minus one between sorted positions (the first is the position itself)."""
    pos = positions.astype(np.int64)
    return np.diff(pos, prepend=-1) - 1


def encode_indices(positions: np.ndarray, n: int, level: int = 3) -> bytes:
    """Sorted unique positions in ``[0, n)``, coded the smallest of three ways, then zstd."""
    pos = np.ascontiguousarray(positions, dtype=np.int64).reshape(-1)
    k = pos.size
    if k and (pos[0] < 0 or pos[-1] >= n or np.any(np.diff(pos) <= 0)):
        raise ValueError("positions must be sorted, unique and inside [0, n)")
    if k == 0:
        return _IDX_HEADER.pack(BITMAP, n, 0, 0)
    options = []
    if k >= n >> 10:  # sparser than one in 1024, a bitmap never wins and costs n bits to build and compress
        bitmap = np.zeros(n, dtype=bool)
        bitmap[pos] = True
        options.append((BITMAP, 0, _zc(np.packbits(bitmap, bitorder="big").tobytes(), level)))
    if k < n // 2:  # gaps can only win when the support is sparse
        gaps = _gaps(pos)
        options.append((VARINT_GAPS, 0, _zc(encode_varints(gaps), level)))
        top = int(gaps.max())
        width = 1 if top < 1 << 8 else 2 if top < 1 << 16 else 4 if top < 1 << 32 else 8
        fixed = gaps.astype(np.dtype(f"<u{width}")).tobytes()
        options.append((FIXED_GAPS, width, _zc(fixed, level)))
    mode, width, body = min(options, key=lambda o: len(o[2]))
    return _IDX_HEADER.pack(mode, n, k, width) + body


def _decode_header(data: bytes, n: int) -> tuple[int, int, int, bytes]:
    mode, stored_n, k, width = _IDX_HEADER.unpack_from(data)
    if stored_n != n:
        raise ValueError(f"support was coded for {stored_n} entries, tensor has {n}")
    return mode, k, width, data[_IDX_HEADER.size :]


def decode_indices(data: bytes, n: int) -> np.ndarray:
    """Inverse of :func:`encode_indices`: sorted int64 positions."""
    mode, k, width, body = _decode_header(data, n)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    raw = _zd(body)
    if mode == BITMAP:
        pos = np.flatnonzero(np.unpackbits(np.frombuffer(raw, dtype=np.uint8), count=n, bitorder="big"))
    elif mode == VARINT_GAPS:
        pos = np.cumsum(decode_varints(raw).astype(np.int64) + 1) - 1
    elif mode == FIXED_GAPS:
        pos = np.cumsum(np.frombuffer(raw, dtype=np.dtype(f"<u{width}")).astype(np.int64) + 1) - 1
    else:
        raise ValueError(f"unknown support coding mode {mode}")
    if pos.size != k:
        raise ValueError(f"support holds {pos.size} positions, header says {k}")
    return pos


def decode_bitmap(data: bytes, n: int) -> np.ndarray | None:
    """The support as n uint8 flags (0/1) when it was coded as a bitmap, else None.

    Dense supports are cheaper to apply as a bitmap than as positions (see
    :func:`scatter_by_bitmap`); sparse ones are cheaper as positions.
    """
    mode, k, _, body = _decode_header(data, n)
    if mode != BITMAP or k == 0:
        return None
    return np.unpackbits(np.frombuffer(_zd(body), dtype=np.uint8), count=n, bitorder="big")


def scatter_by_bitmap(bitmap: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Place ``values`` (in order) at the set flags of ``bitmap``, zeros elsewhere, without scattering.

    ``rank = cumsum(bitmap) * bitmap`` is each kept entry's 1-based rank and 0
    elsewhere, so one gather from ``[0, *values]`` fills the whole output:
    sequential, branch-free, several times faster than a scatter through a
    dense random support.
    """
    rank = np.cumsum(bitmap, dtype=np.int64 if bitmap.size >= 1 << 31 else np.int32)
    rank *= bitmap
    padded = np.empty(values.size + 1, dtype=values.dtype)
    padded[0] = 0
    padded[1:] = values
    return np.take(padded, rank)

