"""Verify: the schema revision, every reference, and the digest of every referenced blob.

Blobs are read from the store itself, never from a local cache in front of
it: the bucket is the record, and a healthy cached copy must not hide a
corrupt or missing object.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from tvstore.blobs import BlobStore
from tvstore.blobs.cache import without_cache
from tvstore.db import migrate
from tvstore.errors import CorruptBlobError, NotFoundError
from tvstore.util.parallel import ordered_map
from tvstore.util.progress import Progress, no_progress
from tvstore.ops.blob_usage import blob_owners

#: blobs read at once: remote stores are bound by request latency, not by this machine's cores
VERIFY_WORKERS = 8


@dataclass
class Problem:
    digest: str
    issue: str  # "missing" | "corrupt"
    owners: list[str]

    def to_dict(self) -> dict:
        return {"blob": self.digest, "issue": self.issue, "owners": self.owners}


@dataclass
class VerifyReport:
    revision: str | None
    head: str
    blobs_checked: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.revision == self.head

    @property
    def affected(self) -> list[str]:
        """Affected vectors and bases, e.g. ``vector bbc@2``, sorted and unique."""
        return sorted({o.split(",")[0] for p in self.problems for o in p.owners})

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "schema_revision": self.revision,
            "schema_head": self.head,
            "blobs_checked": self.blobs_checked,
            "problems": [p.to_dict() for p in self.problems],
            "affected": self.affected,
        }


def _check(blobs: BlobStore, digest: str) -> str | None:
    try:
        blobs.get(digest)
    except NotFoundError:
        return "missing"
    except CorruptBlobError:
        return "corrupt"
    return None


def verify_registry(engine: Engine, session: Session, blobs: BlobStore, progress: Progress = no_progress) -> VerifyReport:
    report = VerifyReport(migrate.current_revision(engine), migrate.head_revision(engine))
    owners = blob_owners(session)
    digests = sorted(owners)
    blobs = without_cache(blobs)
    with progress("verifying blobs", len(digests)) as advance:
        for digest, issue in zip(digests, ordered_map(lambda d: _check(blobs, d), digests, workers=VERIFY_WORKERS)):
            report.blobs_checked += 1
            if issue:
                report.problems.append(Problem(digest, issue, owners[digest]))
            advance(1)
    return report
