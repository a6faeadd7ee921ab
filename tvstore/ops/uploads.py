"""Blobs a remote client uploaded straight to the bucket are checked before a commit refers to them.

A client that moves bytes through a presigned URL could store anything under
any key; the server reads back every blob the commit introduces (blobs the
database already records were verified when they first arrived) and deletes
one whose bytes do not hash to its digest, so nothing bad is ever referenced.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from tvstore.blobs import BlobStore
from tvstore.db.models import Blob
from tvstore.errors import CorruptBlobError


def unrecorded(session: Session, digests: list[str]) -> list[str]:
    """The digests the database does not know yet (new to this commit)."""
    known = set(session.scalars(select(Blob.digest).where(Blob.digest.in_(digests)))) if digests else set()
    return [d for d in digests if d not in known]


def verify_uploads(session: Session, blobs: BlobStore, digests: list[str]) -> None:
    """Read back each new blob; a corrupt one is deleted and reported (``CorruptBlobError``)."""
    for digest in unrecorded(session, digests):
        try:
            blobs.get(digest)
        except CorruptBlobError:
            blobs.delete(digest)
            raise
