"""Plain summaries of registry rows, for printing and for ``--json``."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from tvstore.db.models import BaseModel, TaskVector, VectorTensor
from tvstore.util.refs import versioned


RECIPE_CODEC = "recipe"  # what ``codec.id`` reads for a merge saved as its recipe (rebuilt on read)


def iso(moment: datetime) -> str:
    """ISO 8601 in UTC; SQLite hands timestamps back without their zone."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


def _ratio(raw: int, stored: int) -> float | None:
    return raw / stored if stored else None


@dataclass(frozen=True)
class BaseInfo:
    name: str
    digest: str
    source: str
    num_tensors: int
    num_params: int
    raw_bytes: int
    stored_bytes: int
    side_files: list[str]
    created_at: str

    @classmethod
    def of(cls, base: BaseModel) -> BaseInfo:
        return cls(base.name, base.digest, base.source, len(base.tensors), base.num_params, base.raw_bytes,
                   base.stored_bytes, [f.path for f in base.files], iso(base.created_at))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TensorSummary:
    name: str
    role: str
    dtype: str
    shape: list[int]
    codec: dict[str, Any]
    components: int
    raw_bytes: int
    stored_bytes: int
    ratio: float | None
    rel_l2: float | None
    cosine: float | None

    @classmethod
    def of(cls, t: VectorTensor) -> TensorSummary:
        return cls(t.name, t.role, t.dtype, list(t.shape), t.codec, len(t.components), t.raw_bytes,
                   t.stored_bytes, _ratio(t.raw_bytes, t.stored_bytes), t.rel_l2, t.cosine)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class VectorInfo:
    name: str
    version: int
    base: str
    kind: str
    codec: dict[str, Any]
    num_tensors: int
    num_params: int
    raw_bytes: int
    stored_bytes: int
    ratio: float | None
    rel_l2: float | None
    cosine: float | None
    meta: dict[str, Any]
    tags: list[str]
    created_at: str
    recipe: dict[str, Any] | None = None

    @property
    def ref(self) -> str:
        return versioned(self.name, self.version)

    @property
    def is_recipe(self) -> bool:
        return self.codec.get("id") == RECIPE_CODEC

    @property
    def recipe_inputs(self) -> list[str]:
        """``["good@1 x0.5", ...]``: what a saved recipe is rebuilt from (empty for stored vectors)."""
        inputs = (self.recipe or {}).get("inputs", []) if self.is_recipe else []
        return [i["ref"] + (f" x{i['weight']:g}" if isinstance(i.get("weight"), (int, float)) else "") for i in inputs]

    @classmethod
    def of(cls, v: TaskVector, tags: list[str] | None = None) -> VectorInfo:
        # A merge saved as its recipe stores no tensors and was never measured: it is
        # shown as a recipe, not as an empty lossless vector with a perfect error.
        codec, rel_l2, cosine = ({"id": RECIPE_CODEC}, None, None) if v.is_recipe else (v.codec, v.rel_l2, v.cosine)
        return cls(v.name, v.version, v.base.name, v.kind, codec, v.num_tensors, v.num_params, v.raw_bytes,
                   v.stored_bytes, _ratio(v.raw_bytes, v.stored_bytes), rel_l2, cosine, dict(v.meta),
                   sorted(tags or []), iso(v.created_at), v.recipe)

    def to_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, **asdict(self)}
