"""Tensors read back from the registry: a base's weights, a vector's deltas.

These are the lazy, one-tensor-at-a-time sources that pulls, checkpoint
rebuilds and merges are all built from; nothing here loads a whole model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import torch

from tvstore.blobs import BlobStore
from tvstore.checkpoint.dtypes import dtype_from_name
from tvstore.checkpoint.reader import TensorInfo
from tvstore.tensors.components import Component, Fetch, decode_blob, delta, rebuild
from tvstore.db.models import BaseModel, BaseTensor, ComponentRow, TaskVector, VectorTensor
from tvstore.tensors.encode import ABSENT, EXTRA
from tvstore.errors import CorruptBlobError, NotFoundError


def blob_fetch(blobs: BlobStore, context: str) -> Fetch:
    """A :class:`Fetch` from ``blobs`` whose errors name ``context`` (which tensor of which base or vector)."""
    def fetch(digest: str, *, transient: bool = False) -> bytes | memoryview:
        try:
            return blobs.view(digest) if transient else blobs.read(digest)
        except CorruptBlobError as exc:
            raise CorruptBlobError(digest, str(exc).split(": ", 1)[-1], context) from None
        except NotFoundError:
            raise NotFoundError(f"blob {digest} ({context}) is missing from {blobs.url}") from None

    return fetch


def tensor_info(row: BaseTensor | VectorTensor) -> TensorInfo:
    return TensorInfo(row.name, dtype_from_name(row.dtype), tuple(row.shape))


def to_component(row: ComponentRow) -> Component:
    return Component(row.codec, row.blob_digest, row.scale, row.mask.blob_digest if row.mask else None, row.kind)


class _Rows:
    """Tensor metadata rows by name: what every registry source answers without decoding."""

    _rows: dict[str, BaseTensor | VectorTensor]

    def names(self) -> list[str]:
        return list(self._rows)

    def info(self, name: str) -> TensorInfo:
        return tensor_info(self._rows[name])

    def infos(self) -> list[TensorInfo]:
        return [tensor_info(r) for r in self._rows.values()]

    def __contains__(self, name: object) -> bool:
        return name in self._rows


class BaseSource(_Rows):
    """A registered base model's weights, decoded from its lossless blobs."""

    def __init__(self, base: BaseModel, blobs: BlobStore) -> None:
        self.base = base
        self.blobs = blobs
        self._rows = {t.name: t for t in base.tensors}

    def get(self, name: str) -> torch.Tensor:
        row = self._rows[name]
        fetch = blob_fetch(self.blobs, f"base {self.base.name!r}, tensor {name!r}")
        info = tensor_info(row)
        return decode_blob(row.codec, row.blob_digest, info.shape, info.dtype, fetch)


class VectorSource(_Rows, Mapping[str, torch.Tensor]):
    """A task vector's tensors by name: tau for deltas, the value for extras.

    A ``Mapping``, so ``dict(source)`` or ``model.load_state_dict`` style use
    works, but each access decodes one tensor on demand.
    """

    def __init__(self, vector: TaskVector, blobs: BlobStore) -> None:
        self.vector = vector
        self.blobs = blobs
        self._rows = {t.name: t for t in vector.tensors if t.role != ABSENT}
        self.absent = [t.name for t in vector.tensors if t.role == ABSENT]
        self._base: BaseSource | None = None

    def _base_tensor(self, name: str) -> Callable[[], torch.Tensor]:
        """The base's ``name``, for the components whose tau needs it (``xor``); the base's rows come loaded."""
        def read() -> torch.Tensor:
            if self._base is None:
                self._base = BaseSource(self.vector.base, self.blobs)
            return self._base.get(name)

        return read

    @property
    def label(self) -> str:
        return self.vector.label

    def is_extra(self, name: str) -> bool:
        return self._rows[name].role == EXTRA

    def components(self, name: str) -> list[Component]:
        return [to_component(c) for c in self._rows[name].components]

    def fetch(self, name: str) -> Fetch:
        return blob_fetch(self.blobs, f"vector {self.label}, tensor {name!r}")

    def get(self, name: str) -> torch.Tensor:
        info = self.info(name)
        return delta(self.components(name), info.shape, info.dtype, self.fetch(name), base=self._base_tensor(name))

    def get_into(self, name: str, out: torch.Tensor, base: torch.Tensor | None = None) -> torch.Tensor:
        """``out.copy_(get(name))`` without the intermediate tensor where the codec allows.

        ``base``: the base's ``name``, for a caller that has it decoded already. A merge
        passes the one it read for itself, so its ``xor`` inputs do not decode the base
        again each (it is read, never changed).
        """
        info = self.info(name)
        read_base = self._base_tensor(name) if base is None else lambda: base
        return delta(self.components(name), info.shape, info.dtype, self.fetch(name), out, read_base)

    def rebuild(self, name: str, base: torch.Tensor, in_place: bool = False) -> torch.Tensor:
        """theta for one tensor: base plus this vector's components (exact for exact codecs).

        ``in_place`` adds into ``base`` itself (for a caller that owns it), saving a copy.
        """
        return rebuild(base, self.components(name), self.fetch(name), in_place)

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._rows:
            raise KeyError(name)
        return self.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)
