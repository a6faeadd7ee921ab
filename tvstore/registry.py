"""The facade: everything a user (or the CLI) does with a registry goes through here.

A ``Registry`` is a database (metadata) plus a blob store (bytes); it holds
no other state, so any number of processes may open the same one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from tvstore.blobs import BlobStore, open_blob_store
from tvstore.blobs.cache import without_cache
from tvstore.config import Location
from tvstore.db import migrate
from tvstore.db.engine import make_engine
from tvstore.db.models import BaseModel
from tvstore.db.queries import get_base, get_full_base, get_full_vector, get_vector
from tvstore.errors import SchemaError
from tvstore.ops.gc import DEFAULT_GRACE_SECONDS, GcReport, collect_garbage
from tvstore.ops.info import BaseInfo, TensorSummary, VectorInfo
from tvstore.ops.lineage import LineageNode, ancestors, descendants
from tvstore.ops.listing import list_bases, list_vectors, show_vector
from tvstore.ops.remove import remove_base, remove_vectors
from tvstore.ops.tags import remove_tag, set_tag
from tvstore.ops.verify import VerifyReport, verify_registry
from tvstore.util.progress import Progress, no_progress
from tvstore.util.refs import check_name, parse_ref
from tvstore.util.units import DEFAULT_SHARD_BYTES

# Tensor work (push, pull, merge, pack) imports torch and the codecs on first
# use, inside the methods below, so metadata commands (ls, show, lineage, tag,
# rm, gc, verify) start in a fraction of the time.
if TYPE_CHECKING:
    import torch

    from tvstore.tensors.codec_plan import CodecPlan
    from tvstore.merge import LazyMerged, Merger, Recipe
    from tvstore.ops.lora_export import LoraExport
    from tvstore.ops.merges import RecipeSource
    from tvstore.ops.push import PendingVector
    from tvstore.ops.search import Score, SearchResult
    from tvstore.tensors.sources import VectorSource
    from tvstore.ops.audit import AuditInfo
    from tvstore.ops.tokens import TokenInfo
    from tvstore.remote import RemoteRegistry
    from tvstore.ops.model_card import ModelCard

PathLike = str | os.PathLike[str]
RecipeLike = "str | os.PathLike[str] | dict[str, Any] | Recipe"


def _path(path: PathLike | None) -> Path | None:
    return None if path is None else Path(path)


def parse_recipe(recipe: RecipeLike, extra_tensors: str | None = None) -> Recipe:
    """A recipe parsed, with ``extra_tensors`` overriding its policy (a served registry's client parses the same way)."""
    from tvstore.merge import Recipe, load_recipe

    parsed = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    if extra_tensors is None:
        return parsed
    from tvstore.merge.recipe import parse_extra_tensors
    from tvstore.ops.merges import with_extra_tensors

    return with_extra_tensors(parsed, parse_extra_tensors(extra_tensors))


class Registry:
    """A task vector registry. Open with :meth:`open`; use as a context manager to close it."""

    def __init__(self, location: Location, progress: Progress = no_progress, s3_endpoint: str | None = None) -> None:
        self.location = location
        self.engine = make_engine(location.database_url)
        self.blobs: BlobStore = open_blob_store(location.blob_url, s3_endpoint=s3_endpoint)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.progress = progress

    @classmethod
    def open(
        cls,
        home: PathLike | None = None,
        database_url: str | None = None,
        blob_url: str | None = None,
        progress: Progress = no_progress,
        s3_endpoint: str | None = None,
        remote: str | None = None,
        token: str | None = None,
    ) -> Registry | RemoteRegistry:
        """Open a registry: ``TVSTORE_HOME`` by default, or explicit database/blob URLs.

        ``s3_endpoint`` points an ``s3://`` blob URL at MinIO, Ceph, R2, ...
        (default: ``AWS_ENDPOINT_URL``, else AWS). ``remote`` (``http://host:8700``)
        opens a registry served by ``tvstore serve`` instead, with ``token`` as its bearer secret.
        """
        if remote:
            from tvstore.remote import RemoteRegistry

            return RemoteRegistry(remote, token, progress)
        return cls(Location.resolve(home, database_url, blob_url), progress, s3_endpoint)

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.blobs.close()
        self.engine.dispose()

    def session(self) -> Session:
        return self._sessions()

    # ---- schema -------------------------------------------------------------------------

    def init(self) -> str:
        """Create the registry (or bring it to the newest schema); returns the revision."""
        self.location.ensure_home()
        migrate.upgrade(self.engine)
        return migrate.head_revision(self.engine)

    def upgrade(self) -> str:
        migrate.upgrade(self.engine)
        return migrate.head_revision(self.engine)

    def _missing_sqlite_file(self) -> str | None:
        """The SQLite file path if it does not exist (connecting would create an empty one)."""
        database = self.engine.url.database
        if self.engine.url.get_backend_name() == "sqlite" and database and not Path(database).exists():
            return database
        return None

    def schema_revision(self) -> tuple[str | None, str]:
        current = None if self._missing_sqlite_file() else migrate.current_revision(self.engine)
        return current, migrate.head_revision(self.engine)

    def check_schema(self) -> None:
        """Raise a ``SchemaError`` naming the command to run unless the schema is current."""
        missing = self._missing_sqlite_file()
        if missing:
            raise SchemaError(f"no registry at {missing}: run `tvstore init`")
        migrate.check_schema(self.engine)

    # ---- bases --------------------------------------------------------------------------

    def add_base(self, name: str, path: PathLike) -> BaseInfo:
        from tvstore.ops.bases import add_base

        check_name(name, "base name")
        self.check_schema()
        return BaseInfo.of(add_base(self.session, self.blobs, name, Path(path), self.progress))

    def bases(self) -> list[BaseInfo]:
        self.check_schema()
        with self.session() as session:
            return list_bases(session)

    def base(self, name: str) -> BaseInfo:
        self.check_schema()
        with self.session() as session:
            return BaseInfo.of(get_base(session, name))

    def remove_base(self, name: str) -> None:
        self.check_schema()
        with self.session() as session, session.begin():
            remove_base(session, name)

    # ---- push ---------------------------------------------------------------------------

    def push(
        self,
        name: str,
        finetuned: PathLike | None = None,
        *,
        base: str,
        codec: str | CodecPlan = "lossless",
        codec_rules: list[str] | tuple[str, ...] = (),
        extra: bool = False,
        meta: dict[str, Any] | None = None,
        from_checkpoint: PathLike | None = None,
        to_checkpoint: PathLike | None = None,
        strip_prefix: str | None = None,
    ) -> VectorInfo:
        """Store ``finetuned - base``, or ``to_checkpoint - from_checkpoint``, as a new version of ``name``.

        ``strip_prefix`` maps a fine-tune's names onto the base's (``bert.`` of a classifier); detected if ``None``.
        """
        from tvstore.ops.encode_push import check_push_args, encode_push
        from tvstore.tensors.codec_plan import CodecPlan
        from tvstore.tensors.local_base import push_base_source

        check_name(name, "task vector name")
        plan = codec if isinstance(codec, CodecPlan) else CodecPlan.parse(codec, codec_rules)
        check_push_args(finetuned, from_checkpoint, to_checkpoint)
        self.check_schema()
        with self.session() as session:  # read, then close: no transaction stays open while encoding
            base_row = get_full_base(session, get_base(session, base).id)
        source = push_base_source(base_row, self.blobs)  # no download of a base whose checkpoint is at hand
        pending = encode_push(
            name, source, self.blobs, plan, _path(finetuned), _path(from_checkpoint), _path(to_checkpoint), extra, self.progress,
            prefix=strip_prefix,
        )
        return self._commit(pending, base_row, meta or {})

    def push_searched(
        self,
        name: str,
        finetuned: PathLike,
        *,
        base: str,
        score: Score | str,
        target: float = 0.99,
        extra: bool = False,
        meta: dict[str, Any] | None = None,
    ) -> VectorInfo:
        """Push with the smallest codec whose ``score`` (a callable of a checkpoint directory, or a
        command with ``{dir}``) stays >= ``target`` x the lossless score; the search is in the metadata."""
        from tvstore.ops.search import push_by_search
        from tvstore.tensors.sources import BaseSource

        check_name(name, "task vector name")
        self.check_schema()
        with self.session() as session:
            base_row = get_full_base(session, get_base(session, base).id)
        return push_by_search(self.push, name, Path(finetuned), BaseSource(base_row, self.blobs), self.blobs, score,
                              target, extra, meta, self.progress)

    def _commit(self, pending: PendingVector, base_row: BaseModel, meta: dict[str, Any]) -> VectorInfo:
        from tvstore.ops.commit import commit_vector, source_edges

        vector = commit_vector(self.session, pending, base_row, meta, source_edges(pending), blobs=self.blobs)
        return self.show(vector.label)

    # ---- read ---------------------------------------------------------------------------

    def list(self, name: str | None = None, all_versions: bool = False) -> list[VectorInfo]:
        """Vectors, newest version of each name (or every version), sorted by name."""
        if name is not None:
            check_name(name)
        self.check_schema()
        with self.session() as session:
            return list_vectors(session, name, all_versions)

    def show(self, ref: str) -> VectorInfo:
        self.check_schema()
        with self.session() as session:
            return show_vector(session, ref)

    def tensors(self, ref: str) -> list[TensorSummary]:
        self.check_schema()
        with self.session() as session:
            return [TensorSummary.of(t) for t in get_vector(session, ref).tensors]

    def lineage(self, ref: str) -> dict[str, Any]:
        """``{"vector": ..., "ancestors": [tree], "descendants": [tree]}``."""
        self.check_schema()
        with self.session() as session:
            vector = get_vector(session, ref)
            return {
                "vector": vector.label,
                "ancestors": [n.to_dict() for n in ancestors(session, vector)],
                "descendants": [n.to_dict() for n in descendants(session, vector)],
            }

    def lineage_nodes(self, ref: str) -> tuple[str, list[LineageNode], list[LineageNode]]:
        self.check_schema()
        with self.session() as session:
            vector = get_vector(session, ref)
            return vector.label, ancestors(session, vector), descendants(session, vector)

    def delta_tensors(self, ref: str, head_from: str | None = None) -> VectorSource | RecipeSource:
        """A lazy mapping ``name -> tau`` (extra tensors map to their values).

        ``head_from`` (a merge saved as its recipe only): the extra tensors of that input.
        The merge machinery (and pydantic, for recipes) is imported only for a
        recipe: a stored vector's pull does not pay ~0.2 s of imports for it.
        """
        from tvstore.tensors.sources import VectorSource

        self.check_schema()
        with self.session() as session:
            vector = get_full_vector(session, ref)
            if head_from is None and not vector.is_recipe:
                return VectorSource(vector, self.blobs)
            from tvstore.ops.heads import task_inputs
            from tvstore.ops.merges import open_recipe_vector

            if head_from is not None:
                task_inputs(vector)  # refuses a vector that is not a saved recipe
            head = None if head_from is None else parse_ref(head_from)
            return open_recipe_vector(session, self.blobs, vector, self._stored_vector, head)

    def _stored_vector(self, ref: str) -> VectorSource:
        from tvstore.ops.merges import stored_source

        with self.session() as session:
            return stored_source(get_full_vector(session, ref), self.blobs)

    # ---- packs --------------------------------------------------------------------------

    def pack(self, refs: list[str], codec: str, **params: Any) -> list[VectorInfo]:
        """Re-encode a group into a shared form (``rtvq``, ``tall``, ``emr``): one new version each.

        ``codec`` is ``rtvq[:bits=2.5]``, ``tall[:lambda=0.4,shared=lossless]`` or ``emr``;
        ``params`` override its parameters (``bits``, ``lambda``, ``shared``, ...).
        All new versions commit together; the old ones stay until removed.
        """
        from tvstore.ops.pack import PackSpec, pack_group
        from tvstore.ops.commit import commit_vectors, compressed_from

        spec = PackSpec.parse(codec, **params)
        self.check_schema()
        sources = [self._stored_vector(ref) for ref in refs]
        pending = pack_group(sources, self.blobs, spec, self.progress)
        with self.session() as session:
            base_row = get_full_base(session, sources[0].vector.base_id)
        items = [(p, dict(s.vector.meta), compressed_from(s.vector), None) for p, s in zip(pending, sources)]
        vectors = commit_vectors(self.session, items, base_row, self.blobs)
        return [self.show(v.label) for v in vectors]

    # ---- merges -------------------------------------------------------------------------

    def recipe(self, source: RecipeLike, extra_tensors: str | None = None) -> Recipe:
        """A recipe (YAML text, file, dict) parsed; ``extra_tensors`` overrides its policy for tensors
        the base lacks (``merge``, ``copy``, ``refuse``, ``drop`` or ``from:REF``)."""
        return parse_recipe(source, extra_tensors)

    def merger(self, recipe: RecipeLike, dtype: torch.dtype | None = None) -> Merger:
        """Bind a recipe (YAML text, file, dict or ``Recipe``) to this registry's vectors."""
        from tvstore.ops.merges import bind

        self.check_schema()
        with self.session() as session:
            return bind(session, self.blobs, parse_recipe(recipe), self._stored_vector, dtype)[0]

    def merge(self, recipe: RecipeLike, dtype: torch.dtype | None = None) -> LazyMerged:
        """A lazy ``Mapping[name, tensor]`` of the merged model; each access computes one tensor."""
        from tvstore.merge import LazyMerged

        return LazyMerged(self.merger(recipe, dtype))

    def merge_to_dir(
        self, recipe: RecipeLike, out: PathLike, max_shard_bytes: int = DEFAULT_SHARD_BYTES, dtype: torch.dtype | None = None
    ) -> Path:
        """Write the merged model as a Hugging Face directory (base side files copied, a model card added)."""
        from tvstore.ops.merges import bind, card_of, write_merge
        from tvstore.ops.pull import side_files

        parsed = parse_recipe(recipe)
        self.check_schema()
        with self.session() as session:
            merger, vectors = bind(session, self.blobs, parsed, self._stored_vector, dtype)
            base = get_full_base(session, vectors[0].base_id)
        files = side_files(base, self.blobs)
        return write_merge(merger, Path(out), files, max_shard_bytes, self.progress, card_of(parsed, vectors))

    def save_merge(self, name: str, recipe: RecipeLike, codec: str | None = None, codec_rules: tuple[str, ...] = (),
                   meta: dict[str, Any] | None = None) -> VectorInfo:
        """Register a merge as a task vector: its recipe (rebuilt on read), or with ``codec`` its encoded deltas."""
        from tvstore.tensors.codec_plan import CodecPlan
        from tvstore.ops.merges import bind, encode_merge, merge_edges, pinned
        from tvstore.ops.push import PendingVector
        from tvstore.ops.commit import commit_vector
        from tvstore.tensors.sources import BaseSource

        check_name(name, "task vector name")
        parsed = parse_recipe(recipe)
        self.check_schema()
        with self.session() as session:
            merger, vectors = bind(session, self.blobs, parsed, self._stored_vector)
            base_row = get_full_base(session, vectors[0].base_id)
        if codec is None:
            pending = PendingVector(name, base_row.name, "merge", CodecPlan())
        else:
            plan = CodecPlan.parse(codec, codec_rules)
            pending = encode_merge(name, merger, BaseSource(base_row, self.blobs), self.blobs, plan, self.progress)
        vector = commit_vector(
            self.session, pending, base_row, meta or {}, merge_edges(parsed, vectors), recipe=pinned(parsed, vectors),
            blobs=self.blobs,
        )
        return self.show(vector.label)

    def search_merge(
        self, recipe: PathLike | dict[str, Any], search: list[str], score: Score | str, save_as: str | None = None
    ) -> tuple[dict[str, Any], SearchResult, VectorInfo | None]:
        """Search recipe parameters (``lambda=0.1:1.0``, ``weight=...``, ``NAME.density=...``) by ``score``;
        with ``save_as`` the best recipe is saved as a merge vector with its score. Returns (recipe, result, saved)."""
        from tvstore.ops.merges import bind
        from tvstore.ops.pull import side_files
        from tvstore.ops.search import merge_by_search, merge_trial

        if save_as is not None:
            check_name(save_as, "task vector name")
        self.check_schema()

        def trial(candidate: dict[str, Any]):
            with self.session() as session:
                merger, vectors = bind(session, self.blobs, parse_recipe(candidate), self._stored_vector)
                base = get_full_base(session, vectors[0].base_id)
            return merge_trial(merger, list(side_files(base, self.blobs)))

        def save(best: dict[str, Any], found: SearchResult) -> VectorInfo:
            return self.save_merge(save_as, best, meta={"search": found.to_meta()})

        return merge_by_search(recipe, search, score, trial, save if save_as else None, self.progress)

    # ---- pull ---------------------------------------------------------------------------

    def pull(self, ref: str, out: PathLike) -> Path:
        """Write the task vector (tau and extra tensors) as one ``.safetensors`` file."""
        from tvstore.ops.pull import pull_vector

        return pull_vector(self.delta_tensors(ref), Path(out), self.progress)

    def pull_checkpoint(self, ref: str, out: PathLike, max_shard_bytes: int = DEFAULT_SHARD_BYTES,
                        head_from: str | None = None) -> Path:
        """Rebuild base + vector as a Hugging Face directory ``transformers`` can load.

        ``head_from``: for a merge saved as its recipe, the tensors the base lacks (a head) of that input.
        """
        from tvstore.ops.model_card import vector_card
        from tvstore.ops.pull import pull_checkpoint
        from tvstore.tensors.sources import BaseSource

        vector = self.delta_tensors(ref, head_from)
        with self.session() as session:
            base_row = get_full_base(session, vector.vector.base_id)
            card = vector_card(session, vector.vector, head_from=head_from)
        source = BaseSource(base_row, self.blobs)
        return pull_checkpoint(source, vector, self.blobs, Path(out), max_shard_bytes, self.progress, card)

    def rebuild(self, ref: str, workers: int | None = None) -> Iterator[tuple[str, torch.Tensor]]:
        """The fine-tune behind ``ref``, rebuilt in memory: ``(name, theta)`` in checkpoint order, lazily."""
        from tvstore.ops.pull import checkpoint_tensors, rebuilt_tensors
        from tvstore.tensors.sources import BaseSource

        vector = self.delta_tensors(ref)
        with self.session() as session:
            source = BaseSource(get_full_base(session, vector.vector.base_id), self.blobs)
        names = [i.name for i in checkpoint_tensors(source, vector)[0]]
        return rebuilt_tensors(source, vector, names, workers)

    def pull_per_task(self, ref: str, out: PathLike, max_shard_bytes: int = DEFAULT_SHARD_BYTES) -> list[Path]:
        """A merge saved as its recipe, once per input: ``out/<input name>/`` with that input's own head."""
        from tvstore.ops.heads import pull_per_task

        self.check_schema()
        with self.session() as session:
            vector = get_full_vector(session, ref)
        label = vector.label
        return pull_per_task(vector, Path(out), lambda head, path: self.pull_checkpoint(label, path, max_shard_bytes, str(head)))

    def to_lora(self, ref: str, out: PathLike, rank: int | str = 16, max_error: float | None = None,
                target_modules: list[str] | tuple[str, ...] = ()) -> LoraExport:
        """Write ``ref`` as a PEFT LoRA adapter directory: a truncated SVD of each changed 2-D weight.

        ``rank`` is an integer, or ``"auto"`` with ``max_error`` (per-module rank, largest relative
        L2 error); ``target_modules`` are PEFT-style names or globs (default: every changed 2-D weight).
        """
        from tvstore.ops.lora_export import LoraSpec, export_lora
        from tvstore.ops.model_card import vector_card

        spec = LoraSpec.parse(rank, max_error, tuple(target_modules))
        vector = self.delta_tensors(ref)
        with self.session() as session:
            card = vector_card(session, vector.vector)
        return export_lora(vector, spec, Path(out), card, self.progress)

    def load(self, ref: str, model_class: Any = None, **config: Any) -> Any:
        """The rebuilt fine-tune as a ``transformers`` model in memory (``AutoModel`` by default).

        ``config`` overrides the base's config.json (e.g. ``num_labels=3`` for a task head).
        """
        from tvstore.ops.load_model import load_model
        from tvstore.tensors.sources import BaseSource

        vector = self.delta_tensors(ref)
        with self.session() as session:
            base_row = get_full_base(session, vector.vector.base_id)
        return load_model(BaseSource(base_row, self.blobs), vector, self.blobs, model_class, config)

    # ---- tags, removal, maintenance ------------------------------------------------------

    def tag(self, ref: str, tag: str) -> VectorInfo:
        """Point ``name:tag`` at ``ref`` (moving it if it pointed elsewhere)."""
        self.check_schema()
        with self.session() as session, session.begin():
            vector = set_tag(session, ref, tag)
        return self.show(vector.label)

    def untag(self, name: str, tag: str) -> None:
        self.check_schema()
        with self.session() as session, session.begin():
            remove_tag(session, check_name(name), tag)

    def remove(self, ref: str, all_versions: bool = False) -> list[str]:
        """Remove one version (``name@v``, ``name:tag``) or, with ``all_versions``, every version.

        Blobs stay until ``gc``; lineage edges from descendants keep a note of the parent.
        """
        self.check_schema()
        with self.session() as session, session.begin():
            return remove_vectors(session, ref, all_versions)

    def gc(self, grace_seconds: float = DEFAULT_GRACE_SECONDS, dry_run: bool = False) -> GcReport:
        self.check_schema()
        with self.session() as session:
            return collect_garbage(session, self.blobs, grace_seconds, dry_run, self.progress)

    def verify(self) -> VerifyReport:
        """Check every referenced blob in the store itself (a local cache would hide bucket rot)."""
        self.check_schema()
        with self.session() as session:
            return verify_registry(self.engine, session, without_cache(self.blobs), self.progress)

    # ---- a served registry: tokens, audit, pushes a remote client encoded ------------------

    def create_token(
        self, name: str, scope: str, names: list[str] | None = None, expires_in: float | None = None
    ) -> tuple[TokenInfo, str]:
        """A new token and its secret (shown once; only its hash is stored)."""
        from tvstore.ops.tokens import create_token

        self.check_schema()
        with self.session() as session, session.begin():
            return create_token(session, name, scope, names, expires_in)

    def tokens(self) -> list[TokenInfo]:
        from tvstore.ops.tokens import list_tokens

        self.check_schema()
        with self.session() as session:
            return list_tokens(session)

    def revoke_token(self, name: str) -> TokenInfo:
        from tvstore.ops.tokens import revoke_token

        self.check_schema()
        with self.session() as session, session.begin():
            return revoke_token(session, name)

    def authenticate(self, secret: str | None) -> TokenInfo:
        from tvstore.ops.tokens import authenticate

        with self.session() as session:
            return authenticate(session, secret)

    def may_read_blob(self, token: TokenInfo, digest: str) -> bool:
        """Whether a token narrowed to names may fetch this blob (a base or a vector it covers uses it)."""
        from tvstore.ops.tokens import may_read_blob

        with self.session() as session:
            return may_read_blob(session, token, digest)

    def audit(self, limit: int | None = None) -> list[AuditInfo]:
        from tvstore.ops.audit import list_audit

        self.check_schema()
        with self.session() as session:
            return list_audit(session, limit)

    def record_audit(self, token: str, action: str, target: str, detail: dict[str, Any] | None = None) -> None:
        from tvstore.ops.audit import record

        with self.session() as session, session.begin():
            record(session, token, action, target, detail)

    def base_rows(self, name: str) -> dict[str, Any]:
        """A base with its tensor manifest as JSON (what a remote client encodes against)."""
        from tvstore.db.wire import row_to_dict

        self.check_schema()
        with self.session() as session:
            return row_to_dict(get_full_base(session, get_base(session, name).id))

    def vector_rows(self, ref: str) -> dict[str, Any]:
        """A stored vector with its tensors and components as JSON (what a remote client decodes)."""
        from tvstore.db.wire import row_to_dict

        self.check_schema()
        with self.session() as session:
            return row_to_dict(get_full_vector(session, ref))

    def card(self, ref: str, head_from: str | None = None) -> ModelCard:
        """The model card a rebuilt checkpoint of ``ref`` carries (a remote client writes the same one)."""
        from tvstore.ops.model_card import vector_card

        self.check_schema()
        with self.session() as session:
            return vector_card(session, get_vector(session, ref), head_from=head_from)

    def commit_base(self, base: BaseModel, sizes: list[tuple[str, int]], verify_uploads: bool = False) -> BaseInfo:
        """Commit a base a remote client stored the blobs of; with ``verify_uploads`` its new blobs are hashed first."""
        from tvstore.ops.bases import commit_base
        from tvstore.ops.uploads import verify_uploads as verify

        self.check_schema()
        if verify_uploads:
            with self.session() as session:
                verify(session, self.blobs, [d for d, _ in sizes])
        return BaseInfo.of(commit_base(self.session, self.blobs, base, sizes))

    def missing_blobs(self, digests: list[str]) -> list[str]:
        """Which of ``digests`` the store lacks: a client uploads only those."""
        return [d for d in dict.fromkeys(digests) if not self.blobs.exists(d)]

    def commit_pushed(self, pending: PendingVector, meta: dict[str, Any], verify_uploads: bool = False) -> VectorInfo:
        """Commit a push a remote client encoded; with ``verify_uploads`` its new blobs are hashed first."""
        from tvstore.ops.uploads import verify_uploads as verify
        from tvstore.ops.wire import blob_digests

        check_name(pending.name, "task vector name")
        self.check_schema()
        with self.session() as session:
            base_row = get_full_base(session, get_base(session, pending.base_name).id)
            if verify_uploads:
                verify(session, self.blobs, blob_digests(pending))
        return self._commit(pending, base_row, meta)
