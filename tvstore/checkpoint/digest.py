"""Content digests of tensors and whole checkpoints, independent of file layout.

Two checkpoints with the same tensors have the same digest whether they are
one file or ten shards, so lineage can recognise a checkpoint it has seen.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

import torch

from tvstore.checkpoint.dtypes import dtype_name


def tensor_digest(tensor: torch.Tensor) -> str:
    flat = tensor.detach().contiguous().reshape(-1)
    h = hashlib.sha256(f"{dtype_name(tensor.dtype)}{list(tensor.shape)}".encode())
    if flat.numel():
        h.update(memoryview(flat.view(torch.uint8).numpy()))
    return h.hexdigest()


def manifest_digest(entries: Iterable[tuple[str, str]]) -> str:
    """Digest of ``(tensor name, tensor digest)`` pairs, order-independent."""
    return hashlib.sha256(json.dumps(sorted(entries)).encode()).hexdigest()
