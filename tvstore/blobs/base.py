"""The blob store protocol: content-addressed, immutable byte strings.

A blob's key is the SHA-256 of its bytes, so puts are idempotent and any
number of clients can write the same blob without coordination. Every read
is verified, because a registry's promise of bit-exact pulls is only as good
as the bytes it reads back: ``get`` re-hashes each time, ``read`` (the
rebuild path) once per blob file per machine where the store can remember.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path

from tvstore.errors import CorruptBlobError, NotFoundError

DIGEST_HEX_LEN = 64


def digest_bytes(data: bytes | memoryview) -> str:
    """The content address of ``data`` (lowercase hex SHA-256)."""
    return hashlib.sha256(data).hexdigest()


def check_digest(digest: str) -> str:
    """Reject anything that is not a well-formed digest (keys build file paths)."""
    if len(digest) != DIGEST_HEX_LEN or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"not a blob digest: {digest!r}")
    return digest


def fanout(digest: str) -> str:
    """Where a blob lives under an ``objects`` folder or prefix: ``ab/cdef…`` (dvc's layout; no folder holds too many files)."""
    check_digest(digest)
    return f"{digest[:2]}/{digest[2:]}"


def fanout_path(objects: Path, digest: str) -> Path:
    """:func:`fanout` under a local ``objects`` folder."""
    return objects / fanout(digest)


def verified(digest: str, data: bytes) -> bytes:
    """Return ``data`` if it hashes to ``digest``, else raise ``CorruptBlobError``."""
    actual = digest_bytes(data)
    if actual != digest:
        raise CorruptBlobError(digest, f"its {len(data)} bytes hash to {actual}")
    return data


class BlobStore(ABC):
    """Where blob bytes live. Subclasses: local folder, memory, S3.

    Capability properties follow zarr's ``Store``: callers ask rather than
    type-check.
    """

    #: a URL that reopens the same store (``file:///…``, ``memory://…``, ``s3://…``)
    url: str
    #: reads cross a network (and are billed): worth avoiding when the same bytes are on local disk
    is_remote: bool = False

    @abstractmethod
    def put(self, data: bytes) -> str:
        """Store ``data`` if absent and return its digest. Idempotent."""

    @abstractmethod
    def _read(self, digest: str) -> bytes:
        """Raw bytes of a blob, unverified; raise ``NotFoundError`` if absent."""

    @abstractmethod
    def exists(self, digest: str) -> bool:
        """Whether a blob with this digest is stored."""

    @abstractmethod
    def delete(self, digest: str) -> None:
        """Remove a blob; removing an absent blob is not an error."""

    @abstractmethod
    def iter_digests(self) -> Iterator[str]:
        """Every stored digest, in no particular order."""

    @abstractmethod
    def size(self, digest: str) -> int:
        """Stored size in bytes; ``NotFoundError`` if absent."""

    def get(self, digest: str) -> bytes:
        """The blob's bytes, verified against its digest."""
        check_digest(digest)
        return verified(digest, self._read(digest))

    def read(self, digest: str) -> bytes | memoryview:
        """The blob's bytes for decoding, verified; stores that can remember a verification
        (a local folder, see :mod:`tvstore.blobs.marks`) hash each blob once per machine instead
        of on every read. :meth:`get` always re-hashes (``verify`` uses it)."""
        return self.get(digest)

    def view(self, digest: str) -> bytes | memoryview:
        """:meth:`read`'s bytes for a reader that only reads them and does not keep them (it decodes
        them into new memory): a local folder maps the blob file read-only instead of copying it out.
        Writing through the result, or keeping a view of it in a decoded tensor, is a bug."""
        return self.read(digest)

    def put_many(self, datas: Iterable[bytes]) -> list[str]:
        """Store several blobs and return their digests in order.

        Sequential here; remote stores override it with parallel transfers,
        because per-request latency, not bandwidth, bounds many small puts.
        """
        return [self.put(data) for data in datas]

    def get_many(self, digests: Iterable[str]) -> dict[str, bytes]:
        """Verified bytes of several blobs, keyed by digest (parallel where it pays)."""
        return {digest: self.get(digest) for digest in dict.fromkeys(digests)}

    def modified(self, digest: str) -> float | None:
        """When the blob was written (POSIX seconds), or ``None`` if the store cannot tell.

        ``gc`` uses it for its grace period: a blob written by a push that has
        not committed yet is young, and must not be swept.
        """
        return None

    def close(self) -> None:
        """Release connections; the default store holds none."""

    def _missing(self, digest: str) -> NotFoundError:
        return NotFoundError(f"blob {digest} is missing from {self.url}")
