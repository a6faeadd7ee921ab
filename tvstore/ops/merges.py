"""Merges in the registry: bind a recipe to stored vectors, write it, or save it as a vector.

A merge saved without a codec is stored as its recipe alone (references
pinned to exact versions) and rebuilt on every read; with a codec, its
deltas are computed once and stored like any pushed vector. Either way its
lineage is merged-from every input, with the input's weight.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from sqlalchemy.orm import Session

from tvstore.blobs import BlobStore
from tvstore.checkpoint import TensorInfo
from tvstore.tensors.codec_plan import CodecPlan
from tvstore.db.models import LineageEdge, TaskVector
from tvstore.db.queries import get_full_base, get_full_vector
from tvstore.tensors.encode import encode_delta, encode_extra
from tvstore.errors import UsageError
from tvstore.merge import Merger, Recipe, load_recipe, materialize
from tvstore.util.parallel import ordered_map
from tvstore.util.progress import Progress, no_progress
from tvstore.ops.push import PendingVector, store_tensor
from tvstore.ops.lineage import MERGED_FROM
from tvstore.ops.model_card import ModelCard, merge_card
from tvstore.ops.commit import EdgeFactory
from tvstore.util.refs import Ref
from tvstore.tensors.sources import BaseSource, VectorSource
from tvstore.util.refs import versioned


_REF_KEYS = ("ref", "model", "from")  # where recipes (ours, mergekit's) name vectors; ``extra_tensors: {from: REF}``


def pinned(recipe: Recipe, vectors: list[TaskVector]) -> dict[str, Any]:
    """The recipe as stored: every input reference replaced by ``name@version``."""
    exact = {str(ref): versioned(v.name, v.version) for ref, v in zip(recipe.vectors, vectors)}

    def pin(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: exact.get(v, v) if k in _REF_KEYS and isinstance(v, str) else pin(v) for k, v in node.items()}
        if isinstance(node, list):
            return [exact.get(v, v) if isinstance(v, str) else pin(v) for v in node]  # bare references
        return node

    return pin(dict(recipe.raw))


def bind(
    session: Session,
    blobs: BlobStore,
    recipe: Recipe,
    open_vector: Callable[[str], VectorSource],
    dtype: torch.dtype | None = None,
) -> tuple[Merger, list[TaskVector]]:
    """A ``Merger`` over the recipe's vectors, whose base is the recipe's or the vectors' own."""
    return bind_with(recipe, open_vector, lambda v: BaseSource(get_full_base(session, v.base_id), blobs), dtype)


def bind_with(
    recipe: Recipe,
    open_vector: Callable[[str], VectorSource],
    open_base: Callable[[TaskVector], BaseSource],
    dtype: torch.dtype | None = None,
) -> tuple[Merger, list[TaskVector]]:
    """:func:`bind` with the base opened by ``open_base`` (a served registry's client fetches its rows)."""
    if not recipe.vectors:
        raise UsageError("the recipe names no task vectors to merge")
    sources = [open_vector(str(ref)) for ref in recipe.vectors]
    bases = {s.vector.base.name for s in sources}
    if len(bases) > 1:
        raise UsageError(f"the recipe mixes task vectors of different bases: {', '.join(sorted(bases))}")
    (base_name,) = bases
    recipe = _head_input(recipe.with_base(Ref(base_name)), sources, open_vector)
    base = open_base(sources[0].vector)
    return Merger(recipe, base, sources, dtype=dtype or recipe.dtype), [s.vector for s in sources]


def _head_input(recipe: Recipe, sources: list[VectorSource], open_vector: Callable[[str], VectorSource]) -> Recipe:
    """``extra_tensors: {from: REF}`` pointed at its input's own spelling (``alpha`` -> ``alpha@1``).

    Both are resolved to exact versions, so ``--head-from alpha`` finds a saved merge's pinned input.
    """
    policy = recipe.extra_tensors
    if not isinstance(policy, Ref) or policy in recipe.vectors:
        return recipe
    label = open_vector(str(policy)).vector.label
    for ref, source in zip(recipe.vectors, sources):
        if source.vector.label == label:
            return replace(recipe, extra_tensors=ref)
    return recipe  # the merger names the inputs it could have been


def stored_source(vector: TaskVector, blobs: BlobStore) -> VectorSource:
    """A merge's input: a vector stored as deltas (a saved recipe is not merged again)."""
    if vector.is_recipe:
        raise UsageError(f"{vector.label} is itself a recipe; merge its inputs directly or save it with --codec")
    return VectorSource(vector, blobs)


def with_extra_tensors(recipe: Recipe, policy: str | Ref) -> Recipe:
    """``recipe`` with another ``extra_tensors`` policy (``--extra-tensors``, ``--head-from``), raw form included."""
    if "merge_method" in recipe.raw:
        raise UsageError("--extra-tensors and --head-from need tvstore's recipe format (mergekit's has no extra_tensors)")
    spelled = {"from": str(policy)} if isinstance(policy, Ref) else policy
    return replace(recipe, extra_tensors=policy, raw={**recipe.raw, "extra_tensors": spelled})


def input_weights(recipe: Recipe) -> list[float | None]:
    """Each input's weight for lineage; ``None`` where it varies by tensor or layer."""
    out = []
    for inp in (i for i in recipe.inputs if not i.is_base):
        weight = inp.settings.get("weight", recipe.settings.get("weight", 1.0))
        out.append(float(weight) if isinstance(weight, (int, float)) else None)
    return out


def merge_edges(recipe: Recipe, vectors: list[TaskVector]) -> EdgeFactory:
    def make(session: Session, child: TaskVector) -> list[LineageEdge]:
        return [
            LineageEdge(relation=MERGED_FROM, parent_vector_id=v.id, parent_note=versioned(v.name, v.version), weight=w)
            for v, w in zip(vectors, input_weights(recipe))
        ]

    return make


def card_of(recipe: Recipe, vectors: list[TaskVector]) -> ModelCard:
    """The model card of a merge written out: its pinned recipe, merged-from each input with its weight."""
    return merge_card(vectors[0].base, pinned(recipe, vectors), list(zip(vectors, input_weights(recipe))))


def encode_merge(name: str, merger: Merger, base: BaseSource, blobs: BlobStore, plan: CodecPlan,
                 progress: Progress = no_progress) -> PendingVector:
    """Compute the merge's deltas once and store them with ``plan``'s codecs."""
    pending = PendingVector(name, base.base.name, "merge", plan)
    plan.check([i for i in base.infos() if i.dtype.is_floating_point])

    def work(item: tuple[str, torch.Tensor]):
        tname, theta = item
        if tname not in base:
            return store_tensor(encode_extra(tname, theta), blobs)
        if not theta.is_floating_point():
            return None
        return store_tensor(encode_delta(tname, theta - base.get(tname).to(theta.dtype), plan.codec_for(tname)), blobs)

    with progress(f"encoding merge {name}", len(merger.names())) as advance:
        for stored in ordered_map(work, materialize(merger)):
            if stored is not None:
                pending.tensors.append(stored)
            advance(1)
    return pending


class RecipeSource:
    """A merge stored as its recipe, read like any vector: tau = merged - base, on demand."""

    def __init__(self, vector: TaskVector, merger: Merger, base: BaseSource) -> None:
        self.vector = vector
        self.merger = merger
        self.base = base
        self.absent: list[str] = []

    @property
    def label(self) -> str:
        return self.vector.label

    def names(self) -> list[str]:
        return [n for n in self.merger.names() if n not in self.base or self.base.info(n).dtype.is_floating_point]

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def info(self, name: str) -> TensorInfo:
        info = self.merger.info(name)
        return info if isinstance(info, TensorInfo) else TensorInfo(name, *info)

    def infos(self) -> list[TensorInfo]:
        return [self.info(n) for n in self.names()]

    def is_extra(self, name: str) -> bool:
        return name not in self.base

    def get(self, name: str) -> torch.Tensor:
        theta = self.merger.get(name)
        return theta if self.is_extra(name) else theta - self.base.get(name).to(theta.dtype)

    def rebuild(self, name: str, base: torch.Tensor) -> torch.Tensor:
        return self.merger.get(name)


def open_recipe_vector(session: Session, blobs: BlobStore, vector: TaskVector,
                       open_vector: Callable[[str], VectorSource], head_from: Ref | None = None) -> RecipeSource:
    """A merge saved as its recipe, readable as a vector; ``head_from`` takes the extra tensors of that input."""
    full = get_full_vector(session, versioned(vector.name, vector.version))
    return recipe_source(full, open_vector, lambda v: BaseSource(get_full_base(session, v.base_id), blobs), head_from)


def recipe_source(vector: TaskVector, open_vector: Callable[[str], VectorSource],
                  open_base: Callable[[TaskVector], BaseSource], head_from: Ref | None = None) -> RecipeSource:
    """:func:`open_recipe_vector` over rows opened by the callables (a served registry's client)."""
    recipe = load_recipe(vector.recipe)
    merger, _ = bind_with(recipe if head_from is None else with_extra_tensors(recipe, head_from), open_vector, open_base)
    return RecipeSource(vector, merger, open_base(vector))


def write_merge(merger: Merger, out: Path, side_files: Iterator[tuple[str, bytes]], max_shard_bytes: int,
                progress: Progress = no_progress, card: ModelCard | None = None) -> Path:
    from tvstore.checkpoint import write_checkpoint_dir

    infos = merger.infos()
    with progress("merging", len(infos)) as advance:

        def tensors() -> Iterator[tuple[str, torch.Tensor]]:
            for item in materialize(merger):
                yield item
                advance(1)

        metadata = {"tvstore.merge": "1"}
        if card is not None:
            side_files, metadata = card.attach(side_files, metadata)
        return write_checkpoint_dir(out, infos, tensors(), side_files, max_shard_bytes, metadata)
