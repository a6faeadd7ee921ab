"""The facade: everything a user (or the CLI) does with a registry goes through here.

A ``Registry`` is a database (metadata) plus a blob store (bytes); it holds
no other state, so any number of processes may open the same one.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, joinedload, sessionmaker

from tvstore.blobs import BlobStore, open_blob_store
from tvstore.blobs.cache import without_cache
from tvstore.config import Location
from tvstore.db import migrate
from tvstore.db.engine import make_engine
from tvstore.db.models import BaseModel, ComponentRow, LineageEdge, Mask, Tag, TaskVector, VectorTensor
from tvstore.db.queries import get_base, get_full_base, get_full_vector, get_vector
from tvstore.errors import AlreadyExistsError, SchemaError, TvstoreError, UsageError
from tvstore.gc import DEFAULT_GRACE_SECONDS, GcReport, collect_garbage
from tvstore.info import BaseInfo, TensorSummary, VectorInfo
from tvstore.lineage import COMPRESSED_FROM, MERGED_FROM, LineageNode, ancestors, descendants, label
from tvstore.progress import Progress, no_progress
from tvstore.refs import LATEST, check_name, parse_ref
from tvstore.units import DEFAULT_SHARD_BYTES
from tvstore.verify import VerifyReport, verify_registry

# Tensor work (push, pull, merge, pack) imports torch and the codecs on first
# use, inside the methods below, so metadata commands (ls, show, lineage, tag,
# rm, gc, verify) start in a fraction of the time.
if TYPE_CHECKING:
    import torch

    from tvstore.codecs.plan import CodecPlan
    from tvstore.merge import LazyMerged, Merger, Recipe
    from tvstore.merged import RecipeSource
    from tvstore.push import PendingVector
    from tvstore.record import EdgeFactory
    from tvstore.sources import VectorSource

PathLike = str | os.PathLike[str]
RecipeLike = "str | os.PathLike[str] | dict[str, Any] | Recipe"


def _recipe(recipe: RecipeLike) -> Recipe:
    from tvstore.merge import Recipe, load_recipe

    return recipe if isinstance(recipe, Recipe) else load_recipe(recipe)


def _compressed_from(parent: TaskVector) -> EdgeFactory:
    def make(session: Session, child: TaskVector) -> list[LineageEdge]:
        return [LineageEdge(relation=COMPRESSED_FROM, parent_vector_id=parent.id, parent_note=label(parent))]

    return make


def _refuse_recipe_inputs(session: Session, ids: list[int]) -> None:
    """A merge stored as a recipe needs its inputs on every read; removing one would break it."""
    edges = session.scalars(
        select(LineageEdge).where(LineageEdge.parent_vector_id.in_(ids), LineageEdge.relation == MERGED_FROM)
    )
    for edge in edges:
        child = edge.child
        if child.num_tensors == 0 and child.recipe is not None and child.id not in ids:
            raise TvstoreError(
                f"{label(edge.parent_vector)} is an input of {label(child)}, a merge stored as its recipe; "
                f"remove {label(child)} first, or save the merge again with --codec"
            )


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
    ) -> Registry:
        """Open a registry: ``TVSTORE_HOME`` by default, or explicit database/blob URLs.

        ``s3_endpoint`` points an ``s3://`` blob URL at MinIO, Ceph, R2, ...
        (default: ``AWS_ENDPOINT_URL``, else AWS).
        """
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
        if self.location.uses_home:
            self.location.home.mkdir(parents=True, exist_ok=True)
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
        from tvstore.bases import add_base

        check_name(name, "base name")
        self.check_schema()
        with self.session() as session, session.begin():
            if session.scalar(select(BaseModel.id).where(BaseModel.name == name)) is not None:
                raise AlreadyExistsError(f"base model {name!r} already exists")
            base = add_base(session, self.blobs, name, Path(path), self.progress)
            return BaseInfo.of(base)

    def bases(self) -> list[BaseInfo]:
        self.check_schema()
        with self.session() as session:
            return [BaseInfo.of(b) for b in session.scalars(select(BaseModel).order_by(BaseModel.name))]

    def base(self, name: str) -> BaseInfo:
        self.check_schema()
        with self.session() as session:
            return BaseInfo.of(get_base(session, name))

    def remove_base(self, name: str) -> None:
        self.check_schema()
        with self.session() as session, session.begin():
            base = get_base(session, name)
            users = session.scalars(select(TaskVector).where(TaskVector.base_id == base.id).limit(3)).all()
            if users:
                raise TvstoreError(
                    f"base {name!r} is used by task vectors ({', '.join(label(v) for v in users)}, ...); remove them first"
                )
            session.delete(base)

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
    ) -> VectorInfo:
        """Store ``finetuned - base``, or ``to_checkpoint - from_checkpoint``, as a new version of ``name``."""
        from tvstore.checkpoint.peft import is_adapter_dir
        from tvstore.codecs.plan import CodecPlan
        from tvstore.push import push_difference, push_finetune
        from tvstore.push_adapter import push_adapter
        from tvstore.sources import BaseSource

        check_name(name, "task vector name")
        plan = codec if isinstance(codec, CodecPlan) else CodecPlan.parse(codec, codec_rules)
        if finetuned is None and (from_checkpoint is None or to_checkpoint is None):
            raise UsageError("give a fine-tuned checkpoint, or both --from and --to")
        if finetuned is not None and (from_checkpoint or to_checkpoint):
            raise UsageError("give either a fine-tuned checkpoint or --from/--to, not both")
        self.check_schema()
        with self.session() as session:
            base_row = get_full_base(session, get_base(session, base).id)
            source = BaseSource(base_row, self.blobs)
            if finetuned is not None and is_adapter_dir(Path(finetuned)):
                pending = push_adapter(name, Path(finetuned), source, self.blobs, extra, self.progress)
            elif finetuned is not None:
                pending = push_finetune(name, Path(finetuned), source, self.blobs, plan, extra, self.progress)
            else:
                pending = push_difference(
                    name, Path(from_checkpoint), Path(to_checkpoint), source, self.blobs, plan, extra, self.progress
                )
        return self._commit(pending, base_row, meta or {})

    def _commit(self, pending: PendingVector, base_row: BaseModel, meta: dict[str, Any]) -> VectorInfo:
        from tvstore.record import commit_vector, source_edges

        vector = commit_vector(self.session, pending, base_row, meta, source_edges(pending), blobs=self.blobs)
        return self.show(f"{vector.name}@{vector.version}")

    # ---- read ---------------------------------------------------------------------------

    def _tags_by_vector(self, session: Session) -> dict[int, list[str]]:
        tags: dict[int, list[str]] = defaultdict(list)
        for vector_id, tag in session.execute(select(Tag.vector_id, Tag.tag)):
            tags[vector_id].append(tag)
        return tags

    def list(self, name: str | None = None, all_versions: bool = False) -> list[VectorInfo]:
        """Vectors, newest version of each name (or every version), sorted by name."""
        self.check_schema()
        with self.session() as session:
            query = select(TaskVector).options(joinedload(TaskVector.base)).order_by(TaskVector.name, TaskVector.version)
            if name is not None:
                query = query.where(TaskVector.name == check_name(name))
            if not all_versions:  # newest per name, chosen by the database (uses the (name, version) index)
                newest = select(TaskVector.name, func.max(TaskVector.version).label("version")).group_by(TaskVector.name)
                if name is not None:
                    newest = newest.where(TaskVector.name == name)
                sub = newest.subquery()
                query = query.join(sub, (TaskVector.name == sub.c.name) & (TaskVector.version == sub.c.version))
            vectors = list(session.scalars(query))
            tags = self._tags_by_vector(session)
            return [VectorInfo.of(v, tags.get(v.id, [])) for v in vectors]

    def show(self, ref: str) -> VectorInfo:
        self.check_schema()
        with self.session() as session:
            vector = get_vector(session, ref)
            tags = session.scalars(select(Tag.tag).where(Tag.vector_id == vector.id)).all()
            return VectorInfo.of(vector, list(tags))

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
                "vector": label(vector),
                "ancestors": [n.to_dict() for n in ancestors(session, vector)],
                "descendants": [n.to_dict() for n in descendants(session, vector)],
            }

    def lineage_nodes(self, ref: str) -> tuple[str, list[LineageNode], list[LineageNode]]:
        self.check_schema()
        with self.session() as session:
            vector = get_vector(session, ref)
            return label(vector), ancestors(session, vector), descendants(session, vector)

    def delta_tensors(self, ref: str) -> VectorSource | RecipeSource:
        """A lazy mapping ``name -> tau`` (extra tensors map to their values)."""
        from tvstore.merged import open_recipe_vector
        from tvstore.sources import VectorSource

        self.check_schema()
        with self.session() as session:
            vector = get_full_vector(session, ref)
            if vector.kind == "merge" and vector.recipe is not None and vector.num_tensors == 0:
                return open_recipe_vector(session, self.blobs, vector, self._stored_vector)
            return VectorSource(vector, self.blobs)

    def _stored_vector(self, ref: str) -> VectorSource:
        from tvstore.sources import VectorSource

        with self.session() as session:
            vector = get_full_vector(session, ref)
            if vector.num_tensors == 0 and vector.recipe is not None:
                raise UsageError(f"{label(vector)} is itself a recipe; merge its inputs directly or save it with --codec")
            return VectorSource(vector, self.blobs)

    # ---- packs --------------------------------------------------------------------------

    def pack(self, refs: list[str], codec: str, **params: Any) -> list[VectorInfo]:
        """Re-encode a group into a shared form (``rtvq``, ``tall``, ``emr``): one new version each.

        ``codec`` is ``rtvq[:bits=2.5]``, ``tall[:lambda=0.4,shared=lossless]`` or ``emr``;
        ``params`` override its parameters (``bits``, ``lambda``, ``shared``, ...).
        All new versions commit together; the old ones stay until removed.
        """
        from tvstore.pack import PackSpec, pack_group
        from tvstore.record import commit_vectors

        spec = PackSpec.parse(codec, **params)
        self.check_schema()
        sources = [self._stored_vector(ref) for ref in refs]
        pending = pack_group(sources, self.blobs, spec, self.progress)
        with self.session() as session:
            base_row = get_full_base(session, sources[0].vector.base_id)
        items = [(p, dict(s.vector.meta), _compressed_from(s.vector), None) for p, s in zip(pending, sources)]
        vectors = commit_vectors(self.session, items, base_row, self.blobs)
        return [self.show(f"{v.name}@{v.version}") for v in vectors]

    # ---- merges -------------------------------------------------------------------------

    def merger(self, recipe: RecipeLike, dtype: torch.dtype | None = None) -> Merger:
        """Bind a recipe (YAML text, file, dict or ``Recipe``) to this registry's vectors."""
        from tvstore.merged import bind

        self.check_schema()
        with self.session() as session:
            return bind(session, self.blobs, _recipe(recipe), self._stored_vector, dtype)[0]

    def merge(self, recipe: RecipeLike, dtype: torch.dtype | None = None) -> LazyMerged:
        """A lazy ``Mapping[name, tensor]`` of the merged model; each access computes one tensor."""
        from tvstore.merge import LazyMerged

        return LazyMerged(self.merger(recipe, dtype))

    def merge_to_dir(
        self, recipe: RecipeLike, out: PathLike, max_shard_bytes: int = DEFAULT_SHARD_BYTES, dtype: torch.dtype | None = None
    ) -> Path:
        """Write the merged model as a Hugging Face directory (base side files copied)."""
        from tvstore.merged import write_merge
        from tvstore.pull import side_files

        merger = self.merger(recipe, dtype)
        with self.session() as session:
            base = get_full_base(session, get_base(session, merger.recipe.recipe.base.name).id)
        return write_merge(merger, Path(out), side_files(base, self.blobs), max_shard_bytes, self.progress)

    def save_merge(self, name: str, recipe: RecipeLike, codec: str | None = None, codec_rules: tuple[str, ...] = ()) -> VectorInfo:
        """Register a merge as a task vector: its recipe (rebuilt on read), or with ``codec`` its encoded deltas."""
        from tvstore.codecs.plan import CodecPlan
        from tvstore.merged import bind, encode_merge, merge_edges, pinned
        from tvstore.push import PendingVector
        from tvstore.record import commit_vector
        from tvstore.sources import BaseSource

        check_name(name, "task vector name")
        parsed = _recipe(recipe)
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
            self.session, pending, base_row, {}, merge_edges(parsed, vectors), recipe=pinned(parsed, vectors), blobs=self.blobs
        )
        return self.show(f"{vector.name}@{vector.version}")

    # ---- pull ---------------------------------------------------------------------------

    def pull(self, ref: str, out: PathLike) -> Path:
        """Write the task vector (tau and extra tensors) as one ``.safetensors`` file."""
        from tvstore.pull import pull_vector

        return pull_vector(self.delta_tensors(ref), Path(out), self.progress)

    def pull_checkpoint(self, ref: str, out: PathLike, max_shard_bytes: int = DEFAULT_SHARD_BYTES) -> Path:
        """Rebuild base + vector as a Hugging Face directory ``transformers`` can load."""
        from tvstore.pull import pull_checkpoint
        from tvstore.sources import BaseSource

        vector = self.delta_tensors(ref)
        with self.session() as session:
            base_row = get_full_base(session, vector.vector.base_id)
        return pull_checkpoint(BaseSource(base_row, self.blobs), vector, self.blobs, Path(out), max_shard_bytes, self.progress)

    # ---- tags, removal, maintenance ------------------------------------------------------

    def tag(self, ref: str, tag: str) -> VectorInfo:
        """Point ``name:tag`` at ``ref`` (moving it if it pointed elsewhere)."""
        check_name(tag, "tag")
        if tag == LATEST:
            raise UsageError("'latest' always means the newest version and cannot be set")
        self.check_schema()
        with self.session() as session, session.begin():
            vector = get_vector(session, ref)
            existing = session.scalar(select(Tag).where(Tag.name == vector.name, Tag.tag == tag))
            if existing is None:
                session.add(Tag(name=vector.name, tag=tag, vector_id=vector.id))
            else:
                existing.vector_id = vector.id
        return self.show(f"{vector.name}@{vector.version}")

    def untag(self, name: str, tag: str) -> None:
        self.check_schema()
        with self.session() as session, session.begin():
            existing = session.scalar(select(Tag).where(Tag.name == check_name(name), Tag.tag == tag))
            if existing is None:
                raise UsageError(f"task vector {name!r} has no tag {tag!r}")
            session.delete(existing)

    def remove(self, ref: str, all_versions: bool = False) -> list[str]:
        """Remove one version (``name@v``, ``name:tag``) or, with ``all_versions``, every version.

        Blobs stay until ``gc``; lineage edges from descendants keep a note of the parent.
        """
        parsed = parse_ref(ref)
        if parsed.version is None and parsed.tag is None and not all_versions:
            raise UsageError(f"say which version to remove ({ref}@N or {ref}:TAG), or pass --all-versions")
        self.check_schema()
        with self.session() as session, session.begin():
            if all_versions:
                vectors = list(session.scalars(select(TaskVector).where(TaskVector.name == parsed.name)))
                if not vectors:
                    get_vector(session, parsed.name)  # raises the not-found error
            else:
                vectors = [get_vector(session, parsed)]
            removed = [label(v) for v in vectors]
            ids = [v.id for v in vectors]
            _refuse_recipe_inputs(session, ids)
            for edge in session.scalars(select(LineageEdge).where(LineageEdge.parent_vector_id.in_(ids))):
                edge.parent_note = f"{edge.parent_note} (removed {label(edge.parent_vector)})".strip()
                edge.parent_vector_id = None
            mask_ids = session.scalars(
                select(ComponentRow.mask_id).join(VectorTensor).where(VectorTensor.vector_id.in_(ids), ComponentRow.mask_id.is_not(None))
            ).all()
            for v in vectors:
                session.delete(v)
            session.flush()
            if mask_ids:
                session.execute(delete(Mask).where(Mask.id.in_(mask_ids)))
            return removed

    def gc(self, grace_seconds: float = DEFAULT_GRACE_SECONDS, dry_run: bool = False) -> GcReport:
        self.check_schema()
        with self.session() as session:
            return collect_garbage(session, self.blobs, grace_seconds, dry_run, self.progress)

    def verify(self) -> VerifyReport:
        """Check every referenced blob in the store itself (a local cache would hide bucket rot)."""
        self.check_schema()
        with self.session() as session:
            return verify_registry(self.engine, session, without_cache(self.blobs), self.progress)
