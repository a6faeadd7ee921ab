"""Claims on blob rows: how a push's commit and gc's sweep never cross.

The grace period alone leaves one gap. gc reads a blob's age, finds it old,
and deletes it; if a push re-puts that very blob (a dedupe hit: the bytes
were already there, unreferenced) between gc's age check and its delete, the
push goes on to commit a reference to a blob that no longer exists.

So both sides take a row lock on the blob's row in ``blobs`` first:

- a push's commit transaction (and ``base add``'s, :mod:`tvstore.ops.bases`)
  upserts (claims) the rows of all its blobs, in digest order so two writers
  never deadlock, then checks that every blob is still in the store, then
  inserts the vector (or the base);
- gc sweeps one blob per transaction: it claims the row, re-checks that
  nothing refers to the blob and that it is still old, and only then deletes
  the bytes and the row.

A claim is an ``INSERT … ON CONFLICT DO UPDATE``: it locks an existing row
(PostgreSQL) or inserts one that a concurrent inserter must wait for; on
SQLite any write takes the database's single write lock. Whoever claims
second waits for the first to commit. If gc went first the push finds the
blob gone and commits nothing (``BlobVanishedError``: push again); if the
push went first gc sees the new reference and keeps the blob.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy.orm import Session

from tvstore.blobs import BlobStore
from tvstore.db.models import Blob
from tvstore.db.queries import upsert
from tvstore.errors import NotFoundError
from tvstore.util.parallel import ordered_map

#: rows per upsert statement (SQLite allows 32766 bound parameters; 2 per row)
CHUNK = 500
#: parallel existence checks (HEAD requests on S3)
CHECK_WORKERS = 8


class BlobVanishedError(NotFoundError):
    """A blob this push (or ``base add``) wrote was swept by a concurrent gc before it could commit."""


def claim_blobs(session: Session, sizes: Iterable[tuple[str, int]]) -> None:
    """Insert or lock the rows of these blobs, in digest order (a total order: no deadlocks)."""
    rows = [{"digest": d, "size": s} for d, s in sorted(dict(sizes).items())]
    for start in range(0, len(rows), CHUNK):
        stmt = upsert(session, Blob).values(rows[start : start + CHUNK])
        # a no-op update: it changes nothing, but locks the row until this transaction ends
        stmt = stmt.on_conflict_do_update(index_elements=["digest"], set_={"size": Blob.size})
        session.execute(stmt)


def check_blobs_present(blobs: BlobStore, digests: Sequence[str], operation: str = "push") -> None:
    """Raise ``BlobVanishedError`` naming the first blob no longer in the store (and what to run again)."""
    unique = sorted(set(digests))
    for digest, present in zip(unique, ordered_map(blobs.exists, unique, workers=CHECK_WORKERS)):
        if not present:
            raise BlobVanishedError(
                f"blob {digest} was removed from {blobs.url} by a concurrent gc before this {operation} "
                f"could commit; nothing was committed: run the {operation} again"
            )
