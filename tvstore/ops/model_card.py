"""Model cards: a checkpoint tvstore writes says what it is, in README.md and in its safetensors header.

A rebuilt fine-tune or a merge leaves the registry for a hub or a serving
box, where nobody can ask the registry what it was made of. So, as mergekit
writes its merge config into the card, every checkpoint carries its
provenance: base (name and digest), vector and version, codec and the error
measured at push, the recipe (YAML) of a merge, the lineage, and the tvstore
version. The README's YAML front matter is what ``huggingface_hub.ModelCard``
parses (``base_model``, ``library_name``, ``tags``); the same facts go into
every shard's ``__metadata__`` (strings only, structured values as JSON), so
a lone ``.safetensors`` file still knows where it came from.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml
from sqlalchemy.orm import Session

import tvstore
from tvstore.db.models import BaseModel, TaskVector
from tvstore.ops.lineage import MERGED_FROM, LineageNode, ancestors

CARD_NAME = "README.md"
_PREFIX = "tvstore."


@dataclass(frozen=True)
class ModelCard:
    """The provenance of one written checkpoint (or adapter)."""

    title: str
    base: str
    base_digest: str
    facts: dict[str, Any]  # vector, kind, codec, rel_l2, cosine, ... (None values are left out)
    recipe: dict[str, Any] | None = None
    lineage: list[dict[str, Any]] = field(default_factory=list)
    tags: tuple[str, ...] = ("tvstore", "task-vector")
    library_name: str = "transformers"

    def front_matter(self) -> dict[str, Any]:
        return {"base_model": self.base, "library_name": self.library_name, "tags": list(self.tags)}

    def readme(self) -> str:
        """Markdown with YAML front matter: facts table, recipe as YAML, lineage tree."""
        parts = [f"---\n{yaml.safe_dump(self.front_matter(), sort_keys=False)}---", f"# {self.title}", self._table()]
        if self.recipe is not None:
            recipe = yaml.safe_dump(self.recipe, sort_keys=False)
            parts.append(f"## Merge recipe\n\n```yaml\n{recipe}```")
        if self.lineage:
            parts.append("## Lineage\n\n" + "\n".join(_tree(self.lineage, 0)))
        parts.append(f"Written by tvstore {tvstore.__version__}.")
        return "\n\n".join(parts) + "\n"

    def _table(self) -> str:
        rows = [("base", f"`{self.base}` ({self.base_digest})"), *((k, _cell(v)) for k, v in self._facts().items())]
        return "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)

    def _facts(self) -> dict[str, Any]:
        return {k: v for k, v in self.facts.items() if v is not None}

    def metadata(self) -> dict[str, str]:
        """The same facts for a safetensors header (``tvstore.*`` keys, strings only)."""
        values: dict[str, Any] = {"base": self.base, "base_digest": self.base_digest, **self._facts(),
                                  "tvstore_version": tvstore.__version__}
        if self.recipe is not None:
            values["recipe"] = self.recipe
        if self.lineage:
            values["lineage"] = self.lineage
        return {_PREFIX + k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in values.items()}

    def attach(self, side_files: Iterable[tuple[str, bytes]], metadata: dict[str, str]
               ) -> tuple[Iterator[tuple[str, bytes]], dict[str, str]]:
        """Side files with this card in place of the base's own README, and header metadata with its facts."""
        def files() -> Iterator[tuple[str, bytes]]:
            yield from ((path, data) for path, data in side_files if path != CARD_NAME)
            yield CARD_NAME, self.readme().encode()

        return files(), {**metadata, **self.metadata()}


def _cell(value: Any) -> str:
    return f"`{json.dumps(value, sort_keys=True)}`" if isinstance(value, (dict, list)) else f"`{value}`"


def _tree(nodes: list[dict[str, Any]], depth: int) -> Iterator[str]:
    for node in nodes:
        weight = f" x{node['weight']:g}" if node.get("weight") is not None else ""
        yield f"{'  ' * depth}- `{node['label']}` ({node.get('relation', '')}{weight})"
        yield from _tree(node.get("children", []), depth + 1)


def vector_facts(vector: TaskVector) -> dict[str, Any]:
    """What the registry measured about one stored vector."""
    return {"vector": vector.label, "kind": vector.kind, "codec": vector.codec, "rel_l2": vector.rel_l2,
            "cosine": vector.cosine, "meta": dict(vector.meta) or None}


def vector_card(session: Session, vector: TaskVector, title: str | None = None, **facts: Any) -> ModelCard:
    """The card of ``base + vector`` rebuilt (a saved merge carries its pinned recipe)."""
    kind_tags = ("merge",) if vector.recipe is not None or vector.kind == "merge" else ()
    return ModelCard(
        title or f"{vector.label} on {vector.base.name}", vector.base.name, vector.base.digest,
        {**vector_facts(vector), **facts}, vector.recipe, [n.to_dict() for n in ancestors(session, vector)],
        ("tvstore", "task-vector", *kind_tags),
    )


def merge_card(base: BaseModel, recipe: dict[str, Any], inputs: list[tuple[TaskVector, float | None]]) -> ModelCard:
    """The card of ``merge --out``: the recipe pinned to exact versions, merged-from each input."""
    lineage = [LineageNode(v.label, MERGED_FROM, w).to_dict() for v, w in inputs]
    method = recipe.get("method") or recipe.get("merge_method")
    facts = {"kind": "merge", "method": method, "inputs": [v.label for v, _ in inputs]}
    title = f"{method} merge of {', '.join(v.label for v, _ in inputs)}"
    return ModelCard(title, base.name, base.digest, facts, recipe, lineage, ("tvstore", "task-vector", "merge"))
