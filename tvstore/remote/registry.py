"""``RemoteRegistry``: the public methods of ``Registry``, answered by a ``tvstore serve`` server.

Metadata calls are JSON requests. Tensor work happens here, on the client,
with the same per-tensor code a local registry runs: a push encodes against
the base's rows fetched from the server and uploads only the blobs the server
lacks, then asks it to commit; a pull fetches the vector's rows and rebuilds
locally, merges included (``merge --out``, a merge saved as its recipe, LoRA
export): the client fetches each input's rows, so the token must be able to
read every input. Heavy server-side work (pack, saving merges, gc, verify)
runs there; a score-steered search (``merge --search``, ``push --score-cmd``)
runs scoring commands, so it is refused through a server.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from tvstore.errors import SchemaError, UsageError
from tvstore.ops.info import BaseInfo, TensorSummary, VectorInfo
from tvstore.ops.lineage import LineageNode
from tvstore.remote.blobs import RemoteBlobStore
from tvstore.remote.client import Client
from tvstore.util.progress import Progress, no_progress
from tvstore.util.refs import check_name, parse_ref
from tvstore.util.units import DEFAULT_SHARD_BYTES

if TYPE_CHECKING:
    from collections.abc import Iterator

    import torch

    from tvstore.db.models import TaskVector
    from tvstore.merge import LazyMerged, Merger, Recipe
    from tvstore.ops.lora_export import LoraExport
    from tvstore.ops.merges import RecipeSource
    from tvstore.ops.model_card import ModelCard
    from tvstore.ops.audit import AuditInfo
    from tvstore.ops.gc import GcReport
    from tvstore.ops.tokens import TokenInfo
    from tvstore.ops.verify import VerifyReport
    from tvstore.tensors.sources import BaseSource, VectorSource

PathLike = str | os.PathLike[str]
T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """A frozen summary dataclass from its ``to_dict`` (extra keys such as ``ref`` dropped)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in data.items() if k in names})


def _node(data: dict[str, Any]) -> LineageNode:
    return LineageNode(data["label"], data.get("relation"), data.get("weight"), data.get("kind", "vector"),
                       [_node(c) for c in data.get("children", [])])


def _seg(text: str) -> str:
    """A ref or name as one URL path segment (a '/' or '..' stays inside it, for the server to refuse)."""
    return quote(text, safe="@:")


class RemoteRegistry:
    """A registry served over HTTP; open with ``Registry.open(remote=URL, token=SECRET)``."""

    def __init__(self, url: str, token: str | None, progress: Progress = no_progress) -> None:
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"invalid remote {url!r}: expected http://host:port or https://...")
        self.client = Client(url, token)
        self.blobs = RemoteBlobStore(self.client)
        self.progress = progress
        self._bases: dict[str, BaseSource] = {}  # a base's rows, fetched once per client

    def __enter__(self) -> RemoteRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()

    def __getattr__(self, name: str) -> Any:
        """A facade method this client does not offer yet: one clear line, not an ``AttributeError``."""
        from tvstore.registry import Registry

        if not name.startswith("_") and callable(getattr(Registry, name, None)):
            raise UsageError(f"`{name}` is not available through a server ({self.client.url}) yet; run it against the registry directly")
        raise AttributeError(name)

    def _refused(self, what: str) -> UsageError:
        return UsageError(f"{what} runs against the registry directly (on the server's machine), not through {self.client.url}")

    def init(self) -> str:
        raise self._refused("`tvstore init`")

    def upgrade(self) -> str:
        raise self._refused("`tvstore db upgrade`")

    def schema_revision(self) -> tuple[str | None, str]:
        data = self.client.json("GET", "/api/schema")
        return data["current"], data["head"]

    def check_schema(self) -> None:
        """The server's database must be at the schema the server knows (it checks at start, too)."""
        problem = self.client.json("GET", "/api/schema")["problem"]
        if problem:
            raise SchemaError(f"the server's registry: {problem}")

    # ---- bases --------------------------------------------------------------------------

    def add_base(self, name: str, path: PathLike) -> BaseInfo:
        """Store the base's blobs from here (only those the server lacks), then ask the server to commit."""
        from tvstore.ops.bases import store_base
        from tvstore.ops.wire import base_to_dict

        check_name(name, "base name")
        self.client.call("GET", f"/api/check/base-add/{_seg(name)}")  # refused before anything is uploaded
        base, sizes = store_base(self.blobs, name, Path(path), self.progress)
        return from_dict(BaseInfo, self.client.json("POST", "/api/bases", json=base_to_dict(base, sizes), retry=False))

    def bases(self) -> list[BaseInfo]:
        return [from_dict(BaseInfo, d) for d in self.client.json("GET", "/api/bases")]

    def base(self, name: str) -> BaseInfo:
        return from_dict(BaseInfo, self.client.json("GET", f"/api/bases/{_seg(name)}"))

    def remove_base(self, name: str) -> None:
        self.client.call("DELETE", f"/api/bases/{_seg(name)}")

    def _base_source(self, name: str) -> BaseSource:
        from tvstore.db.models import BaseModel
        from tvstore.db.wire import row_from_dict
        from tvstore.tensors.sources import BaseSource

        if name not in self._bases:
            rows = self.client.json("GET", f"/api/bases/{_seg(name)}/rows")
            self._bases[name] = BaseSource(row_from_dict(BaseModel, rows), self.blobs)
        return self._bases[name]

    def _base_of(self, vector: TaskVector) -> BaseSource:
        return self._base_source(vector.base.name)

    # ---- push ---------------------------------------------------------------------------

    def push(
        self,
        name: str,
        finetuned: PathLike | None = None,
        *,
        base: str,
        codec: str = "lossless",
        codec_rules: list[str] | tuple[str, ...] = (),
        extra: bool = False,
        meta: dict[str, Any] | None = None,
        from_checkpoint: PathLike | None = None,
        to_checkpoint: PathLike | None = None,
        strip_prefix: str | None = None,
    ) -> VectorInfo:
        """Encode here, upload the blobs the server lacks, and ask the server to commit."""
        from tvstore.ops.encode_push import check_push_args, encode_push
        from tvstore.ops.wire import pending_to_dict
        from tvstore.tensors.codec_plan import CodecPlan

        check_name(name, "task vector name")
        plan = codec if isinstance(codec, CodecPlan) else CodecPlan.parse(codec, codec_rules)
        check_push_args(finetuned, from_checkpoint, to_checkpoint)
        self.client.call("GET", f"/api/check/push/{_seg(name)}")  # scope and grant refused before any encoding
        source = self._base_source(base)
        paths = [None if p is None else Path(p) for p in (finetuned, from_checkpoint, to_checkpoint)]
        pending = encode_push(name, source, self.blobs, plan, *paths, extra=extra, progress=self.progress, prefix=strip_prefix)
        body = {"pending": pending_to_dict(pending), "meta": meta or {}}
        return from_dict(VectorInfo, self.client.json("POST", "/api/vectors", json=body, retry=False))

    # ---- read ---------------------------------------------------------------------------

    def list(self, name: str | None = None, all_versions: bool = False) -> list[VectorInfo]:
        params = {"all": "1" if all_versions else "0", **({"name": check_name(name)} if name is not None else {})}
        return [from_dict(VectorInfo, d) for d in self.client.json("GET", "/api/vectors", params=params)]

    def show(self, ref: str) -> VectorInfo:
        return from_dict(VectorInfo, self.client.json("GET", f"/api/vectors/{_seg(ref)}"))

    def tensors(self, ref: str) -> list[TensorSummary]:
        return [from_dict(TensorSummary, d) for d in self.client.json("GET", f"/api/vectors/{_seg(ref)}/tensors")]

    def lineage(self, ref: str) -> dict[str, Any]:
        return self.client.json("GET", f"/api/vectors/{_seg(ref)}/lineage")

    def lineage_nodes(self, ref: str) -> tuple[str, list[LineageNode], list[LineageNode]]:
        data = self.lineage(ref)
        return data["vector"], [_node(n) for n in data["ancestors"]], [_node(n) for n in data["descendants"]]

    def _vector_row(self, ref: str) -> TaskVector:
        from tvstore.db.models import TaskVector
        from tvstore.db.wire import row_from_dict

        return row_from_dict(TaskVector, self.client.json("GET", f"/api/vectors/{_seg(ref)}/rows"))

    def _stored_vector(self, ref: str) -> VectorSource:
        from tvstore.ops.merges import stored_source

        return stored_source(self._vector_row(ref), self.blobs)

    def _card(self, ref: str, head_from: str | None = None) -> ModelCard:
        from tvstore.ops.model_card import ModelCard

        params = {"head_from": head_from} if head_from is not None else {}
        card = self.client.json("GET", f"/api/vectors/{_seg(ref)}/card", params=params)
        card["tags"] = tuple(card["tags"])
        return ModelCard(**card)

    def delta_tensors(self, ref: str, head_from: str | None = None) -> VectorSource | RecipeSource:
        """A stored vector read from its blobs, or a merge saved as its recipe rebuilt here from its inputs
        (each input's rows fetched with this client's token, so a narrowed token must cover them all)."""
        from tvstore.ops.heads import task_inputs
        from tvstore.ops.merges import recipe_source
        from tvstore.tensors.sources import VectorSource

        vector = self._vector_row(ref)
        if head_from is not None:
            task_inputs(vector)  # refuses a vector that is not a saved recipe
        if vector.is_recipe:
            head = None if head_from is None else parse_ref(head_from)
            return recipe_source(vector, self._stored_vector, self._base_of, head)
        return VectorSource(vector, self.blobs)

    # ---- pull ---------------------------------------------------------------------------

    def pull(self, ref: str, out: PathLike) -> Path:
        from tvstore.ops.pull import pull_vector

        return pull_vector(self.delta_tensors(ref), Path(out), self.progress)

    def pull_checkpoint(self, ref: str, out: PathLike, max_shard_bytes: int = DEFAULT_SHARD_BYTES,
                        head_from: str | None = None) -> Path:
        """Rebuilt here from the blobs; the model card (lineage, error facts) comes from the server."""
        from tvstore.ops.pull import pull_checkpoint

        vector = self.delta_tensors(ref, head_from)
        card = self._card(vector.label, head_from)
        return pull_checkpoint(self._base_of(vector.vector), vector, self.blobs, Path(out), max_shard_bytes, self.progress, card)

    def pull_per_task(self, ref: str, out: PathLike, max_shard_bytes: int = DEFAULT_SHARD_BYTES) -> list[Path]:
        from tvstore.ops.heads import pull_per_task

        vector = self._vector_row(ref)
        return pull_per_task(vector, Path(out), lambda head, path: self.pull_checkpoint(vector.label, path, max_shard_bytes, str(head)))

    def rebuild(self, ref: str, workers: int | None = None) -> Iterator[tuple[str, torch.Tensor]]:
        from tvstore.ops.pull import checkpoint_tensors, rebuilt_tensors

        vector = self.delta_tensors(ref)
        source = self._base_of(vector.vector)
        names = [i.name for i in checkpoint_tensors(source, vector)[0]]
        return rebuilt_tensors(source, vector, names, workers)

    def to_lora(self, ref: str, out: PathLike, rank: int | str = 16, max_error: float | None = None,
                target_modules: list[str] | tuple[str, ...] = ()) -> LoraExport:
        """The SVD runs here, on the rebuilt vector; the card comes from the server."""
        from tvstore.ops.lora_export import LoraSpec, export_lora

        spec = LoraSpec.parse(rank, max_error, tuple(target_modules))
        vector = self.delta_tensors(ref)
        return export_lora(vector, spec, Path(out), self._card(vector.label), self.progress)

    def load(self, ref: str, model_class: Any = None, **config: Any) -> Any:
        from tvstore.ops.load_model import load_model

        vector = self.delta_tensors(ref)
        return load_model(self._base_of(vector.vector), vector, self.blobs, model_class, config)

    # ---- server-side work -----------------------------------------------------------------

    def pack(self, refs: list[str], codec: str, **params: Any) -> list[VectorInfo]:
        body = {"refs": refs, "codec": codec, "params": params}
        return [from_dict(VectorInfo, d) for d in self.client.json("POST", "/api/pack", json=body, retry=False)]

    def recipe(self, source: Any, extra_tensors: str | None = None) -> RecipeRequest:
        """The recipe as the server will take it, parsed here first so a bad one fails the same way locally."""
        from tvstore.registry import parse_recipe

        mapping = _recipe_mapping(source)
        return RecipeRequest(mapping, extra_tensors, parse_recipe(mapping, extra_tensors))

    def _parsed(self, recipe: Any) -> Recipe:
        return (recipe if isinstance(recipe, RecipeRequest) else self.recipe(recipe)).parsed

    def merger(self, recipe: Any, dtype: torch.dtype | None = None) -> Merger:
        """The recipe bound here to its inputs' rows (each fetched with this client's token)."""
        from tvstore.ops.merges import bind_with

        return bind_with(self._parsed(recipe), self._stored_vector, self._base_of, dtype)[0]

    def merge(self, recipe: Any, dtype: torch.dtype | None = None) -> LazyMerged:
        from tvstore.merge import LazyMerged

        return LazyMerged(self.merger(recipe, dtype))

    def save_merge(self, name: str, recipe: Any, codec: str | None = None, codec_rules: tuple[str, ...] = (),
                   meta: dict[str, Any] | None = None) -> VectorInfo:
        request = recipe if isinstance(recipe, RecipeRequest) else self.recipe(recipe)
        body = {"name": name, "recipe": request.recipe, "extra_tensors": request.extra_tensors, "codec": codec,
                "codec_rules": list(codec_rules), "meta": meta or {}}
        return from_dict(VectorInfo, self.client.json("POST", "/api/merges", json=body, retry=False))

    def merge_to_dir(self, recipe: Any, out: PathLike, max_shard_bytes: int = DEFAULT_SHARD_BYTES,
                     dtype: torch.dtype | None = None) -> Path:
        """Merged here from the inputs' blobs, with the card a local ``merge --out`` writes."""
        from tvstore.ops.merges import bind_with, card_of, write_merge
        from tvstore.ops.pull import side_files

        parsed = self._parsed(recipe)
        merger, vectors = bind_with(parsed, self._stored_vector, self._base_of, dtype)
        files = side_files(self._base_of(vectors[0]).base, self.blobs)
        return write_merge(merger, Path(out), files, max_shard_bytes, self.progress, card_of(parsed, vectors))

    def search_merge(self, recipe: Any, search: list[str], score: Any, save_as: str | None = None) -> Any:
        """Searched here: every candidate merged from the inputs' blobs and scored on this machine; only
        ``save_as``'s recipe travels (write scope)."""
        from tvstore.ops.merges import bind_with
        from tvstore.ops.pull import side_files
        from tvstore.ops.search import merge_by_search, merge_trial

        if save_as is not None:
            check_name(save_as, "task vector name")

        def trial(candidate: dict[str, Any]):
            merger, vectors = bind_with(self._parsed(candidate), self._stored_vector, self._base_of)
            return merge_trial(merger, list(side_files(self._base_of(vectors[0]).base, self.blobs)))

        def save(best: dict[str, Any], found: Any) -> VectorInfo:
            return self.save_merge(save_as, best, meta={"search": found.to_meta()})

        return merge_by_search(recipe, search, score, trial, save if save_as else None, self.progress)

    def push_searched(self, name: str, finetuned: PathLike, *, base: str, score: Any, target: float = 0.99,
                      extra: bool = False, meta: dict[str, Any] | None = None) -> VectorInfo:
        """Searched here from the base's blobs (read scope), then pushed (write scope)."""
        from tvstore.ops.search import push_by_search

        check_name(name, "task vector name")
        return push_by_search(self.push, name, Path(finetuned), self._base_source(base), self.blobs, score, target,
                              extra, meta, self.progress)

    # ---- tags, removal, maintenance ------------------------------------------------------

    def tag(self, ref: str, tag: str) -> VectorInfo:
        return from_dict(VectorInfo, self.client.json("POST", f"/api/vectors/{_seg(ref)}/tags", json={"tag": tag}))

    def untag(self, name: str, tag: str) -> None:
        self.client.call("DELETE", f"/api/names/{_seg(name)}/tags/{_seg(tag)}")

    def remove(self, ref: str, all_versions: bool = False) -> list[str]:
        params = {"all": "1" if all_versions else "0"}
        return self.client.json("DELETE", f"/api/vectors/{_seg(ref)}", params=params)["removed"]

    def gc(self, grace_seconds: float | None = None, dry_run: bool = False) -> GcReport:
        from tvstore.ops.gc import GcReport

        d = self.client.json("POST", "/api/gc", json={"grace_seconds": grace_seconds, "dry_run": dry_run}, retry=False)
        return GcReport(d["dry_run"], d["referenced"], d["digests"], d["swept_bytes"], d["kept_young"], d["temporaries"])

    def verify(self) -> VerifyReport:
        from tvstore.ops.verify import Problem, VerifyReport

        d = self.client.json("POST", "/api/verify", retry=False)
        problems = [Problem(p["blob"], p["issue"], p["owners"]) for p in d["problems"]]
        return VerifyReport(d["schema_revision"], d["schema_head"], d["blobs_checked"], problems)

    # ---- tokens and audit ------------------------------------------------------------------

    def create_token(self, name: str, scope: str, names: list[str] | None = None, expires_in: float | None = None) -> tuple[TokenInfo, str]:
        from tvstore.ops.tokens import TokenInfo

        body = {"name": name, "scope": scope, "names": names or [], "expires_in": expires_in}
        data = self.client.json("POST", "/api/tokens", json=body, retry=False)
        return from_dict(TokenInfo, data["token"]), data["secret"]

    def tokens(self) -> list[TokenInfo]:
        from tvstore.ops.tokens import TokenInfo

        return [from_dict(TokenInfo, d) for d in self.client.json("GET", "/api/tokens")]

    def revoke_token(self, name: str) -> TokenInfo:
        from tvstore.ops.tokens import TokenInfo

        return from_dict(TokenInfo, self.client.json("DELETE", f"/api/tokens/{_seg(name)}"))

    def audit(self, limit: int | None = None) -> list[AuditInfo]:
        from tvstore.ops.audit import AuditInfo

        params = {"limit": str(limit)} if limit is not None else {}
        return [from_dict(AuditInfo, d) for d in self.client.json("GET", "/api/audit", params=params)]


@dataclasses.dataclass(frozen=True)
class RecipeRequest:
    """A merge recipe bound for the server: its mapping, the ``--extra-tensors`` override, and both parsed."""

    recipe: dict[str, Any]
    extra_tensors: str | None
    parsed: Recipe


def _recipe_mapping(source: Any) -> dict[str, Any]:
    """A recipe file, YAML text or mapping as a mapping (the server reads no files a client names)."""
    import yaml

    if isinstance(source, dict):
        return source
    if isinstance(source, os.PathLike) or (isinstance(source, str) and "\n" not in source and Path(source).is_file()):
        source = Path(source).read_text(encoding="utf-8")
    if not isinstance(source, str):
        raise UsageError("through a server, give a recipe as a YAML file, YAML text or a mapping")
    try:
        data = yaml.safe_load(source)
    except yaml.YAMLError as e:
        raise UsageError(f"recipe is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UsageError("recipe: expected a mapping at the top level")
    return data
