"""Byte-plane transforms for float tensors (the ZipNN idea).

Rotating each float's bits left by one puts the whole exponent in the top
byte; splitting the array into byte planes then gives zstd one plane of
low-entropy exponents (deltas sit in a narrow exponent range) apart from the
near-random mantissa planes, which would otherwise dilute its statistics.

Speed: these transforms are memory-bound, so the fused versions
(:func:`rotated_planes`, :func:`join_rotated`, :func:`xor_planes_into`) walk the array in chunks that
fit in L2 cache: the rotation's temporaries never reach main memory, and each
element crosses the memory bus once in and once out instead of once per
numpy operation.
"""

from __future__ import annotations

import numpy as np
import torch

#: the unsigned integer of each width in bytes, for moving raw entries as integers
UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
_TORCH_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_CHUNK_BYTES = 256 * 1024  # per chunk of the fused transforms: source + temporaries stay in L2


def int_view(dtype: torch.dtype) -> torch.dtype:
    """The integer dtype of ``dtype``'s width: what a tensor's bits are viewed as (torch lacks uint16..64)."""
    return _TORCH_INT[dtype.itemsize]


def as_uint(tensor: torch.Tensor) -> np.ndarray:
    """The raw bits of a contiguous tensor as a flat unsigned numpy array."""
    flat = tensor.detach().contiguous().reshape(-1)
    width = flat.element_size()
    return flat.view(_TORCH_INT[width]).numpy().view(UINT[width])


def from_uint(bits: np.ndarray, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """Inverse of :func:`as_uint`."""
    width = bits.dtype.itemsize
    signed = bits.view(np.dtype(f"i{width}") if width > 1 else np.uint8)  # torch has no uint16/32/64 views
    return torch.from_numpy(np.ascontiguousarray(signed)).view(dtype).reshape(shape)


def rotate_left(bits: np.ndarray) -> np.ndarray:
    width = bits.dtype.itemsize * 8
    out = np.left_shift(bits, bits.dtype.type(1))
    out |= bits >> bits.dtype.type(width - 1)
    return out


def _rotate_right_inplace(bits: np.ndarray, tmp: np.ndarray) -> None:
    """``bits = rotr(bits, 1)`` using ``tmp`` (same length) as scratch: no allocation."""
    width = bits.dtype.itemsize * 8
    np.left_shift(bits, bits.dtype.type(width - 1), out=tmp)
    np.right_shift(bits, bits.dtype.type(1), out=bits)
    np.bitwise_or(bits, tmp, out=bits)


def _little(bits: np.ndarray) -> np.ndarray:
    return bits.astype(bits.dtype.newbyteorder("<"), copy=False)


def split_planes(bits: np.ndarray) -> list[bytes]:
    """Byte planes, most significant first."""
    width = bits.dtype.itemsize
    as_bytes = _little(bits).view(np.uint8).reshape(-1, width)
    return [as_bytes[:, i].tobytes() for i in reversed(range(width))]


def rotated_planes(bits: np.ndarray, rotate: bool) -> list[np.ndarray]:
    """``split_planes(rotate_left(bits) if rotate else bits)`` as arrays, in one cache-sized pass."""
    width = bits.dtype.itemsize
    n = bits.size
    out = [np.empty(n, dtype=np.uint8) for _ in range(width)]
    step = max(1, _CHUNK_BYTES // width)
    for start in range(0, n, step):
        chunk = bits[start : start + step]
        if rotate:
            chunk = rotate_left(chunk)
        as_bytes = _little(chunk).view(np.uint8).reshape(-1, width)
        for i in range(width):
            out[i][start : start + step] = as_bytes[:, width - 1 - i]
    return out


def join_planes(planes: list[bytes], width: int) -> np.ndarray:
    n = len(planes[0]) if planes else 0
    out = np.empty((n, width), dtype=np.uint8)
    for i, plane in enumerate(planes):
        out[:, width - 1 - i] = np.frombuffer(plane, dtype=np.uint8)
    return out.reshape(-1).view(np.dtype(UINT[width]).newbyteorder("<")).astype(UINT[width], copy=False)


def join_rotated(planes: list, width: int, rotate: bool, out: np.ndarray | None = None) -> np.ndarray:
    """The inverse of :func:`rotate_left`, applied to ``join_planes(planes)`` (or no rotation) in one cache-sized pass.

    ``planes`` may be any buffers (bytes, memoryviews of a payload); ``out``
    (``n * width`` bytes, any dtype) receives the result, so a caller can
    decode straight into a preallocated tensor. Returns ``out`` as unsigned ints.
    """
    n = len(planes[0]) if planes else 0
    if out is None:
        out = np.empty(n * width, dtype=np.uint8)
    result = out.reshape(-1).view(np.uint8).view(np.dtype(UINT[width]).newbyteorder("<"))
    grid = result.view(np.uint8).reshape(n, width)
    sources = [np.frombuffer(p, dtype=np.uint8) for p in planes]
    step = max(1, _CHUNK_BYTES // width)
    tmp = np.empty(min(step, n), dtype=result.dtype) if rotate else None
    for start in range(0, n, step):
        stop = min(n, start + step)
        for i, src in enumerate(sources):
            grid[start:stop, width - 1 - i] = src[start:stop]
        if rotate:
            _rotate_right_inplace(result[start:stop], tmp[: stop - start])
    return result.astype(UINT[width], copy=False)


def xor_planes_into(planes: list, width: int, out: np.ndarray) -> None:
    """``out ^= join_planes(planes, width)`` (no rotation), in one cache-sized pass.

    Each chunk's integers are assembled from the planes by contiguous shifts
    and ORs, then XORed into ``out`` as whole integers: writing each plane into
    its strided byte column of ``out`` instead ran at half the speed.
    """
    n = len(planes[0]) if planes else 0
    result = out.reshape(-1).view(np.uint8).view(np.dtype(UINT[width]).newbyteorder("<"))
    sources = [np.frombuffer(p, dtype=np.uint8) for p in planes]
    step = max(1, _CHUNK_BYTES // width)
    word = np.empty(min(step, n), dtype=result.dtype)
    shifted = np.empty_like(word)
    for start in range(0, n, step):
        stop = min(n, start + step)
        w, s = word[: stop - start], shifted[: stop - start]
        w[...] = sources[-1][start:stop]  # least significant plane: no shift
        for i, src in enumerate(sources[:-1]):  # most significant first
            np.left_shift(src[start:stop], 8 * (width - 1 - i), out=s, dtype=s.dtype)
            np.bitwise_or(w, s, out=w)
        np.bitwise_xor(result[start:stop], w, out=result[start:stop])
