"""Garbage collection: mark every referenced blob, sweep the rest once they are old enough.

Pushes write blobs before the transaction that references them, so a young
unreferenced blob may belong to a push in flight; the grace period keeps it.
A push that re-puts an existing blob refreshes its age for the same reason.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from dataclasses import dataclass, field

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from tvstore.blobs import BlobStore
from tvstore.db.models import Blob
from tvstore.progress import Progress, no_progress
from tvstore.references import referenced_digests

DEFAULT_GRACE_SECONDS = 3600.0


@dataclass
class GcReport:
    dry_run: bool
    referenced: int = 0
    swept: list[str] = field(default_factory=list)
    swept_bytes: int = 0
    kept_young: int = 0

    def to_dict(self) -> dict:
        return {
            "dry_run": self.dry_run,
            "referenced": self.referenced,
            "swept": len(self.swept),
            "swept_bytes": self.swept_bytes,
            "kept_young": self.kept_young,
            "digests": self.swept,
        }


def collect_garbage(
    session: Session,
    blobs: BlobStore,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
    dry_run: bool = False,
    progress: Progress = no_progress,
) -> GcReport:
    report = GcReport(dry_run)
    used = referenced_digests(session)
    report.referenced = len(used)
    cutoff = time.time() - grace_seconds
    candidates = []
    with progress("scanning blobs", None) as advance:
        for digest in blobs.iter_digests():
            advance(1)
            if digest in used:
                continue
            written = blobs.modified(digest)
            if written is None or written > cutoff:
                report.kept_young += 1
                continue
            candidates.append(digest)
    # re-mark just before sweeping: a push may have committed while we scanned
    used = referenced_digests(session)
    for digest in candidates:
        if digest in used:
            continue
        report.swept.append(digest)
        report.swept_bytes += blobs.size(digest)
        if not dry_run:
            blobs.delete(digest)
    if not dry_run:
        stale = set(session.scalars(select(Blob.digest))) - used
        for start in range(0, len(stale), 500):
            chunk = sorted(stale)[start : start + 500]
            session.execute(delete(Blob).where(Blob.digest.in_(chunk), Blob.created_at < datetime.fromtimestamp(cutoff, timezone.utc)))
        session.commit()
    return report

