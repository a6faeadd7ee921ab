"""Garbage collection: mark every referenced blob, sweep the rest once they are old enough.

Pushes write blobs before the transaction that references them, so a young
unreferenced blob may belong to a push in flight; the grace period keeps it
(a push must finish within the grace period). A push that re-puts an
existing blob refreshes its age for the same reason. The last gap — a re-put
landing between gc's age check and its delete — is closed by sweeping under
a claim on the blob's row (:mod:`tvstore.ops.claims`): the final
"unreferenced and old?" check and the delete happen while the row is locked,
and a push's commit takes the same lock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from tvstore.ops.claims import claim_blobs
from tvstore.blobs import BlobStore, LocalBlobStore
from tvstore.db.models import Blob
from tvstore.util.progress import Progress, no_progress
from tvstore.ops.blob_usage import referenced_among, referenced_digests

DEFAULT_GRACE_SECONDS = 3600.0
#: blobs swept per transaction: locks are held briefly, and a large gc is not one round trip per blob
SWEEP_CHUNK = 64


@dataclass
class GcReport:
    dry_run: bool
    referenced: int = 0
    swept: list[str] = field(default_factory=list)
    swept_bytes: int = 0
    kept_young: int = 0
    #: temporary files of writes that never finished (a killed push), removed from a local store
    temporaries: int = 0

    def to_dict(self) -> dict:
        return {
            "dry_run": self.dry_run,
            "referenced": self.referenced,
            "swept": len(self.swept),
            "swept_bytes": self.swept_bytes,
            "kept_young": self.kept_young,
            "temporaries": self.temporaries,
            "digests": self.swept,
        }


def collect_garbage(
    session: Session,
    blobs: BlobStore,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
    dry_run: bool = False,
    progress: Progress = no_progress,
) -> GcReport:
    """Remove unreferenced blobs older than ``grace_seconds`` (and their rows); report what happened."""
    report = GcReport(dry_run)
    used = referenced_digests(session)
    report.referenced = len(used)
    cutoff = time.time() - grace_seconds
    candidates, listed = _old_unreferenced(blobs, used, cutoff, report, progress)
    orphan_rows = set(session.scalars(select(Blob.digest))) - used - listed  # rows whose bytes are gone
    candidates = sorted(set(candidates) | orphan_rows)  # one global order: claims never deadlock with a push's
    session.rollback()  # end the read transaction: each sweep below is a transaction of its own
    if dry_run:
        _report_dry(session, blobs, candidates, report)
        report.temporaries = _sweep_temporaries(blobs, cutoff, dry_run=True)
        return report
    for start in range(0, len(candidates), SWEEP_CHUNK):
        _sweep(session, blobs, candidates[start : start + SWEEP_CHUNK], cutoff, report)
    report.temporaries = _sweep_temporaries(blobs, cutoff)
    return report


def _sweep_temporaries(blobs: BlobStore, cutoff: float, dry_run: bool = False) -> int:
    """Remove (or count) a local store's ``objects/ab/.*.tmp`` files last written before ``cutoff``.

    A write renames its temporary file into place when done, so an old one
    was left by a process that died mid-write; a young one may be a write in
    flight. (Remote stores leave no partial objects; S3's incomplete
    multipart uploads are the bucket's lifecycle rules' job.)
    """
    if not isinstance(blobs, LocalBlobStore) or not blobs.objects.is_dir():
        return 0
    removed = 0
    for path in blobs.objects.glob("*/.*.tmp"):
        try:
            if path.stat().st_mtime < cutoff:
                if not dry_run:
                    path.unlink()
                removed += 1
        except FileNotFoundError:
            continue  # finished (renamed) or removed by another gc meanwhile
    return removed


def _old_unreferenced(
    blobs: BlobStore, used: set[str], cutoff: float, report: GcReport, progress: Progress
) -> tuple[list[str], set[str]]:
    """Blobs in the store that nothing refers to and that were written before ``cutoff``; and every blob listed."""
    candidates, listed = [], set()
    with progress("scanning blobs", None) as advance:
        for digest in blobs.iter_digests():
            advance(1)
            listed.add(digest)
            if digest in used:
                continue
            written = blobs.modified(digest)
            if written is not None and written > cutoff:
                report.kept_young += 1
                continue
            candidates.append(digest)
    return candidates, listed


def _report_dry(session: Session, blobs: BlobStore, candidates: list[str], report: GcReport) -> None:
    used = referenced_digests(session)  # re-mark: a push may have committed while we scanned
    for digest in candidates:
        if digest not in used:
            report.swept.append(digest)
            report.swept_bytes += _size(blobs, digest)
    session.rollback()


def _sweep(session: Session, blobs: BlobStore, chunk: list[str], cutoff: float, report: GcReport) -> None:
    """Claim these blobs' rows, then delete those still unreferenced and old, in one transaction."""
    sizes = {d: _size(blobs, d) for d in chunk}
    with session.begin():
        claim_blobs(session, sizes.items())
        in_use = referenced_among(session, chunk)
        for digest in chunk:
            if digest in in_use:
                continue
            written = blobs.modified(digest)  # re-read under the claim: a re-put may have refreshed it
            if written is None:
                continue  # only the row was left
            if written > cutoff:
                report.kept_young += 1
                continue
            blobs.delete(digest)
            report.swept.append(digest)
            report.swept_bytes += sizes[digest]
        # rows of unreferenced blobs go too (gc's claim may have created some; a push re-creates its own)
        unreferenced = [d for d in chunk if d not in in_use]
        if unreferenced:
            session.execute(delete(Blob).where(Blob.digest.in_(unreferenced)))


def _size(blobs: BlobStore, digest: str) -> int:
    try:
        return blobs.size(digest)
    except Exception:  # noqa: BLE001 - absent (a row whose bytes are gone): nothing to free
        return 0
