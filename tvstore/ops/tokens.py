"""Bearer tokens of a served registry: create, list, revoke, authenticate.

A secret is 32 random bytes (URL-safe base64); only its SHA-256 is stored.
Plain SHA-256 suffices because the secret has 256 bits of entropy (nothing
to brute-force, so no slow password hash); lookups compare the hashes with
``hmac.compare_digest`` so timing says nothing about near misses.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import re
import secrets
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tvstore.db.models import BaseFile, BaseTensor, ComponentRow, Mask, TaskVector, Token, VectorTensor
from tvstore.errors import AlreadyExistsError, AuthError, NotFoundError, UsageError
from tvstore.ops.info import iso
from tvstore.util.refs import check_name

#: each scope includes the ones before it
SCOPES = ("read", "write", "admin")
SECRET_PREFIX = "tvs_"
_PATTERN = re.compile(r"[A-Za-z0-9_.*?-]+")


@dataclass(frozen=True)
class TokenInfo:
    """A token as listed (never its secret)."""

    name: str
    scope: str
    names: list[str]
    created_at: str
    expires_at: str | None
    revoked: bool

    @classmethod
    def of(cls, row: Token) -> TokenInfo:
        return cls(row.name, row.scope, list(row.names), iso(row.created_at),
                   iso(row.expires_at) if row.expires_at else None, row.revoked_at is not None)

    def allows(self, scope: str, name: str | None = None) -> bool:
        """Whether this token has ``scope`` (or a wider one) and, for a name, a grant covering it."""
        if SCOPES.index(self.scope) < SCOPES.index(scope):
            return False
        return name is None or self.covers(name)

    def covers(self, name: str) -> bool:
        return not self.names or any(fnmatch.fnmatchcase(name, p) for p in self.names)

    def to_dict(self) -> dict:
        return asdict(self)


def may_read_blob(session: Session, token: TokenInfo, digest: str) -> bool:
    """Whether ``token`` may fetch this blob by its digest.

    A token narrowed to names could otherwise read any vector whose digests it
    learned elsewhere; so it reads a blob only if a base (bases are not narrowed)
    or a vector of a name it covers refers to it. Unnarrowed tokens read any blob.
    """
    if not token.names:
        return True
    for column in (BaseTensor.blob_digest, BaseFile.blob_digest):
        if session.scalar(select(column).where(column == digest).limit(1)) is not None:
            return True
    users = session.scalars(
        select(TaskVector.name).distinct()
        .join(VectorTensor, VectorTensor.vector_id == TaskVector.id)
        .join(ComponentRow, ComponentRow.tensor_id == VectorTensor.id)
        .outerjoin(Mask, Mask.id == ComponentRow.mask_id)
        .where(or_(ComponentRow.blob_digest == digest, Mask.blob_digest == digest))
    )
    return any(token.covers(name) for name in users)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise UsageError(f"invalid scope {scope!r}: use read, write or admin")
    return scope


def check_pattern(pattern: str) -> str:
    """A name grant: a name with ``*``/``?`` wildcards (``team-a-*``)."""
    if not _PATTERN.fullmatch(pattern):
        raise UsageError(f"invalid name pattern {pattern!r}: use name characters and the wildcards '*' and '?'")
    return pattern


def create_token(
    session: Session, name: str, scope: str, names: list[str] | None = None, expires_in: float | None = None
) -> tuple[TokenInfo, str]:
    """A new token and its secret, which is shown this once and never stored."""
    check_name(name, "token name")
    check_scope(scope)
    patterns = [check_pattern(p) for p in names or []]
    if expires_in is not None and expires_in <= 0:
        raise UsageError("--expires must be positive")
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    now = datetime.now(timezone.utc)
    expires = now + timedelta(seconds=expires_in) if expires_in is not None else None
    row = Token(name=name, scope=scope, names=patterns, secret_hash=hash_secret(secret), created_at=now, expires_at=expires)
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        raise AlreadyExistsError(f"token {name!r} already exists; revoke it or pick another name") from None
    return TokenInfo.of(row), secret


def list_tokens(session: Session) -> list[TokenInfo]:
    return [TokenInfo.of(t) for t in session.scalars(select(Token).order_by(Token.name))]


def revoke_token(session: Session, name: str) -> TokenInfo:
    row = session.scalar(select(Token).where(Token.name == name))
    if row is None:
        raise NotFoundError(f"no token named {name!r}")
    if row.revoked_at is None:
        row.revoked_at = datetime.now(timezone.utc)
    return TokenInfo.of(row)


def authenticate(session: Session, secret: str | None) -> TokenInfo:
    """The live token whose secret this is, else ``AuthError`` (the message never echoes the secret)."""
    if not secret:
        raise AuthError("no token: pass --token or set TVSTORE_TOKEN (create one with `tvstore token create`)")
    digest = hash_secret(secret)
    row = session.scalar(select(Token).where(Token.secret_hash == digest))
    if row is None or not hmac.compare_digest(row.secret_hash, digest):
        raise AuthError("token not recognised by this server")
    if row.revoked_at is not None:
        raise AuthError(f"token {row.name!r} was revoked")
    if row.expires_at is not None and _aware(row.expires_at) <= datetime.now(timezone.utc):
        raise AuthError(f"token {row.name!r} expired at {iso(row.expires_at)}")
    return TokenInfo.of(row)


def _aware(moment: datetime) -> datetime:
    """SQLite hands timestamps back without their zone; they were written in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
