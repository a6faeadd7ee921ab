"""Output buffers for decoders, allocated through numpy.

Decoding is memory-bound, and a fresh torch allocation of tens of MB
page-faults 4 KiB at a time: on Linux with transparent huge pages set to
``madvise`` (the common default) merely touching a new 47 MB torch tensor
costs ~40 ms, capping a decoder near 1 GB/s before it computes anything.
numpy asks the kernel for huge pages on large arrays (``MADV_HUGEPAGE``), so
the same buffer allocated by numpy and wrapped by ``torch.from_numpy`` is
~10x cheaper to fill. Both share memory; nothing is copied.
"""

from __future__ import annotations

import numpy as np
import torch

_NUMPY = {
    torch.float32: np.float32,
    torch.float64: np.float64,
    torch.float16: np.float16,
    torch.uint8: np.uint8,
    torch.int8: np.int8,
    torch.int16: np.int16,
    torch.int32: np.int32,
    torch.int64: np.int64,
    torch.bool: np.bool_,
}


def empty(n: int, dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised 1-D tensor of ``n`` entries backed by numpy memory."""
    if dtype is torch.bfloat16:  # numpy has no bfloat16: same bytes as int16
        return torch.from_numpy(np.empty(n, dtype=np.int16)).view(torch.bfloat16)
    return torch.from_numpy(np.empty(n, dtype=_NUMPY[dtype]))


def zeros(n: int, dtype: torch.dtype) -> torch.Tensor:
    """A zero-filled 1-D tensor of ``n`` entries backed by numpy memory."""
    return empty(n, dtype).zero_()


def convert(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``tensor.to(dtype)`` into a numpy-backed buffer (no-op when the dtype already matches)."""
    if tensor.dtype == dtype:
        return tensor
    return empty(tensor.numel(), dtype).copy_(tensor.reshape(-1)).reshape(tensor.shape)
