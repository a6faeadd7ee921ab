"""A base read from the checkpoint ``base add`` recorded, while it still holds the registered tensors.

A push subtracts the base from every fine-tuned tensor. From a remote store
without a cache that meant downloading the whole base on every push, although
the user usually still has the checkpoint the base was added from
(``BaseModel.source``). Its bytes are trusted only once shown to be the
registered ones: the first read hashes every tensor and compares the manifest
with the base's digest; every later read re-hashes the tensor it returns, so a
file edited during the push is noticed too. Anything that does not match (a
moved, edited or deleted checkpoint, or one tensor changed since) is read from
the blob store instead.
"""

from __future__ import annotations

import threading

import torch

from tvstore.blobs import BlobStore
from tvstore.checkpoint import Checkpoint, open_checkpoint
from tvstore.checkpoint.digest import manifest_digest, tensor_digest
from tvstore.db.models import BaseModel
from tvstore.errors import TvstoreError
from tvstore.tensors.sources import BaseSource
from tvstore.util.parallel import ordered_map

#: a verified local checkpoint and the digest of each of its tensors
Verified = tuple[Checkpoint, dict[str, str]]


class LocalFirstBase(BaseSource):
    """A :class:`BaseSource` that reads the base's own checkpoint when it is intact, else the blobs."""

    def __init__(self, base: BaseModel, blobs: BlobStore) -> None:
        super().__init__(base, blobs)
        self._lock = threading.Lock()
        self._checked = False
        self._local: Verified | None = None

    @property
    def local(self) -> Verified | None:
        """The verified local checkpoint, checked on first use (a difference push never needs it)."""
        with self._lock:
            if not self._checked:
                self._local = verified_checkpoint(self.base)
                self._checked = True
            return self._local

    def get(self, name: str) -> torch.Tensor:
        local = self.local
        if local is not None:
            ckpt, digests = local
            try:
                tensor = ckpt.get(name)
            except TvstoreError:
                tensor = None
            if tensor is not None and tensor_digest(tensor) == digests.get(name):
                return tensor
        return super().get(name)


def verified_checkpoint(base: BaseModel) -> Verified | None:
    """The checkpoint at ``base.source`` if its tensors are exactly the registered base's, else ``None``."""
    try:
        ckpt = open_checkpoint(base.source)
        names = ckpt.names()
        digests = dict(zip(names, ordered_map(lambda n: tensor_digest(ckpt.get(n)), names)))
    except (TvstoreError, OSError):
        return None
    if manifest_digest(digests.items()) != base.digest:
        return None
    return ckpt, digests


def push_base_source(base: BaseModel, blobs: BlobStore) -> BaseSource:
    """What a push subtracts: a remote store's base from local disk when possible, a local store's from its blobs."""
    return LocalFirstBase(base, blobs) if blobs.is_remote else BaseSource(base, blobs)
