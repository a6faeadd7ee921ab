"""The registry's metadata, as SQLAlchemy 2.x typed declarative models.

Blob bytes never live here, only their digests; everything here is small and
transactional, so a push becomes visible in one commit or not at all.
Migration ``0001`` must create exactly these tables (a test compares them).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from tvstore.util.refs import versioned

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
}

def utcnow() -> datetime:
    return datetime.now(timezone.utc)

class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}

class Blob(Base):
    """A stored blob the metadata refers to (the store may hold more: in-flight or orphans)."""

    __tablename__ = "blobs"
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

class BaseModel(Base):
    __tablename__ = "base_models"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    digest: Mapped[str] = mapped_column(String(64), index=True)
    source: Mapped[str] = mapped_column(Text)
    num_params: Mapped[int] = mapped_column(BigInteger)
    raw_bytes: Mapped[int] = mapped_column(BigInteger)
    stored_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    tensors: Mapped[list[BaseTensor]] = relationship(
        back_populates="base", cascade="all, delete-orphan", order_by="BaseTensor.position"
    )
    files: Mapped[list[BaseFile]] = relationship(cascade="all, delete-orphan", order_by="BaseFile.path")

class BaseTensor(Base):
    """One entry of a base's tensor manifest, stored lossless as one blob."""

    __tablename__ = "base_tensors"
    __table_args__ = (UniqueConstraint("base_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    base_id: Mapped[int] = mapped_column(ForeignKey("base_models.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(Text)
    dtype: Mapped[str] = mapped_column(String(8))
    shape: Mapped[list[Any]] = mapped_column(JSON)
    codec: Mapped[dict[str, Any]] = mapped_column(JSON)
    blob_digest: Mapped[str] = mapped_column(ForeignKey("blobs.digest"), index=True)
    base: Mapped[BaseModel] = relationship(back_populates="tensors")

class BaseFile(Base):
    """A side file of a base (config.json, tokenizer…), copied into rebuilt checkpoints."""

    __tablename__ = "base_files"
    __table_args__ = (UniqueConstraint("base_id", "path"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    base_id: Mapped[int] = mapped_column(ForeignKey("base_models.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(Text)
    blob_digest: Mapped[str] = mapped_column(ForeignKey("blobs.digest"), index=True)

class TaskVector(Base):
    __tablename__ = "task_vectors"
    __table_args__ = (UniqueConstraint("name", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[int] = mapped_column(Integer)
    base_id: Mapped[int] = mapped_column(ForeignKey("base_models.id", ondelete="RESTRICT"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # finetune | difference | merge | packed
    codec: Mapped[dict[str, Any]] = mapped_column(JSON)
    raw_bytes: Mapped[int] = mapped_column(BigInteger)
    stored_bytes: Mapped[int] = mapped_column(BigInteger)
    num_params: Mapped[int] = mapped_column(BigInteger)
    num_tensors: Mapped[int] = mapped_column(Integer)
    rel_l2: Mapped[float | None] = mapped_column(Float)
    cosine: Mapped[float | None] = mapped_column(Float)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON)
    recipe: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    source_digest: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    base: Mapped[BaseModel] = relationship()
    tensors: Mapped[list[VectorTensor]] = relationship(
        back_populates="vector", cascade="all, delete-orphan", order_by="VectorTensor.position"
    )

    @property
    def is_recipe(self) -> bool:
        """A merge saved as its recipe: no tensors of its own, rebuilt from its inputs on read."""
        return self.num_tensors == 0 and self.recipe is not None

    @property
    def label(self) -> str:
        return versioned(self.name, self.version)


class VectorTensor(Base):
    """One tensor of a task vector: a delta against the base, or an extra tensor of its own."""

    __tablename__ = "vector_tensors"
    __table_args__ = (UniqueConstraint("vector_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    vector_id: Mapped[int] = mapped_column(ForeignKey("task_vectors.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(8))  # delta | extra
    dtype: Mapped[str] = mapped_column(String(8))
    shape: Mapped[list[Any]] = mapped_column(JSON)
    codec: Mapped[dict[str, Any]] = mapped_column(JSON)
    raw_bytes: Mapped[int] = mapped_column(BigInteger)
    stored_bytes: Mapped[int] = mapped_column(BigInteger)
    rel_l2: Mapped[float | None] = mapped_column(Float)
    cosine: Mapped[float | None] = mapped_column(Float)
    vector: Mapped[TaskVector] = relationship(back_populates="tensors")
    components: Mapped[list[ComponentRow]] = relationship(
        cascade="all, delete-orphan", order_by="ComponentRow.position"
    )

class Mask(Base):
    """A named bit mask over one tensor (TALL/EMR), stored as one blob."""

    __tablename__ = "masks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    tensor_name: Mapped[str] = mapped_column(Text)
    shape: Mapped[list[Any]] = mapped_column(JSON)
    blob_digest: Mapped[str] = mapped_column(ForeignKey("blobs.digest"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

class ComponentRow(Base):
    """One term of the sum that rebuilds a tensor (see ``tvstore.tensors.components``)."""

    __tablename__ = "components"
    __table_args__ = (UniqueConstraint("tensor_id", "position"), CheckConstraint("kind IN ('add', 'fix', 'xor')", name="kind"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tensor_id: Mapped[int] = mapped_column(ForeignKey("vector_tensors.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(8))
    codec: Mapped[dict[str, Any]] = mapped_column(JSON)
    blob_digest: Mapped[str] = mapped_column(ForeignKey("blobs.digest"), index=True)
    scale: Mapped[float] = mapped_column(Float)
    mask_id: Mapped[int | None] = mapped_column(ForeignKey("masks.id", ondelete="RESTRICT"), index=True)
    mask: Mapped[Mask | None] = relationship()

class LineageEdge(Base):
    """child was made from parent: a vector, a base, or an outside checkpoint (``parent_note``)."""

    __tablename__ = "lineage"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    child_id: Mapped[int] = mapped_column(ForeignKey("task_vectors.id", ondelete="CASCADE"), index=True)
    relation: Mapped[str] = mapped_column(String(32))
    parent_vector_id: Mapped[int | None] = mapped_column(
        ForeignKey("task_vectors.id", ondelete="SET NULL"), index=True
    )
    parent_base_id: Mapped[int | None] = mapped_column(ForeignKey("base_models.id", ondelete="SET NULL"))
    parent_note: Mapped[str] = mapped_column(Text)
    weight: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    child: Mapped[TaskVector] = relationship(foreign_keys=[child_id])
    parent_vector: Mapped[TaskVector | None] = relationship(foreign_keys=[parent_vector_id])
    parent_base: Mapped[BaseModel | None] = relationship()

class VectorName(Base):
    """Every name ever pushed and its last version: versions are never reused, even after ``rm``.

    Taking the next version is one upsert on this row, which also serializes
    concurrent pushes of one name without retries.
    """

    __tablename__ = "vector_names"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    last_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Tag(Base):
    """A mutable name for one version of a vector (``name:tag``)."""

    __tablename__ = "tags"
    __table_args__ = (UniqueConstraint("name", "tag"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    tag: Mapped[str] = mapped_column(String(200))
    vector_id: Mapped[int] = mapped_column(ForeignKey("task_vectors.id", ondelete="CASCADE"), index=True)
    vector: Mapped[TaskVector] = relationship()



class Token(Base):
    """A bearer token of a served registry: only the SHA-256 of its secret is kept.

    ``names`` narrows it to name patterns (``team-a/*``); empty means every name.
    """

    __tablename__ = "tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    scope: Mapped[str] = mapped_column(String(8))  # read | write | admin
    names: Mapped[list[Any]] = mapped_column(JSON)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AuditEntry(Base):
    """Who (token name) did what (action) to which ref, and when; one row per served write."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    token_name: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(Text)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)
