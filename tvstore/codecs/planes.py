"""Byte-plane transforms for float tensors (the ZipNN idea).

Rotating each float's bits left by one puts the whole exponent in the top
byte; splitting the array into byte planes then gives zstd one plane of
low-entropy exponents (deltas sit in a narrow exponent range) apart from the
near-random mantissa planes, which would otherwise dilute its statistics.
"""

from __future__ import annotations

import numpy as np
import torch

_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
_TORCH_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def as_uint(tensor: torch.Tensor) -> np.ndarray:
    """The raw bits of a contiguous tensor as a flat unsigned numpy array."""
    flat = tensor.detach().contiguous().reshape(-1)
    width = flat.element_size()
    return flat.view(_TORCH_INT[width]).numpy().view(_UINT[width])


def from_uint(bits: np.ndarray, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """Inverse of :func:`as_uint`."""
    width = bits.dtype.itemsize
    signed = bits.view(np.dtype(f"i{width}") if width > 1 else np.uint8)  # torch has no uint16/32/64 views
    return torch.from_numpy(np.ascontiguousarray(signed)).view(dtype).reshape(shape)


def rotate_left(bits: np.ndarray) -> np.ndarray:
    width = bits.dtype.itemsize * 8
    one, rest = bits.dtype.type(1), bits.dtype.type(width - 1)
    return (bits << one) | (bits >> rest)


def rotate_right(bits: np.ndarray) -> np.ndarray:
    width = bits.dtype.itemsize * 8
    one, rest = bits.dtype.type(1), bits.dtype.type(width - 1)
    return (bits >> one) | (bits << rest)


def split_planes(bits: np.ndarray) -> list[bytes]:
    """Byte planes, most significant first."""
    width = bits.dtype.itemsize
    as_bytes = bits.astype(bits.dtype.newbyteorder("<"), copy=False).view(np.uint8).reshape(-1, width)
    return [as_bytes[:, i].tobytes() for i in reversed(range(width))]


def join_planes(planes: list[bytes], width: int) -> np.ndarray:
    n = len(planes[0]) if planes else 0
    out = np.empty((n, width), dtype=np.uint8)
    for i, plane in enumerate(planes):
        out[:, width - 1 - i] = np.frombuffer(plane, dtype=np.uint8)
    return out.reshape(-1).view(np.dtype(_UINT[width]).newbyteorder("<")).astype(_UINT[width], copy=False)
