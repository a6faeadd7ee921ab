"""Verified once per blob per machine: marks that say a local blob file was hashed already.

Hashing every blob on every read costs a core ~0.6 s per GB (SHA-256 with
SHA instructions) for bytes that were checked the last time and have not
changed since. A mark records the blob file's stat stamp (size, mtime,
inode, device) at the moment its bytes hashed to its digest; a later read
whose file shows the same stamp skips the hash. Any rewrite of the file
(a corrupted copy put in its place, an edit, a re-put's time refresh)
changes the stamp, and the next read hashes again. What a mark cannot see
is bit rot below the file system; ``tvstore verify`` re-hashes every blob
regardless of marks, for that.

A file written in the last couple of seconds is not marked: file times tick
coarsely, so a rewrite that soon after would keep the stamp (git's "racily
clean" problem); such a blob is hashed again on its next read.

Marks live beside the store (``<root>/verified/ab/cdef…``); a store whose
folder is read-only to this user simply hashes on every read.
"""

from __future__ import annotations

import mmap
import os
import time
from pathlib import Path

import numpy as np

from tvstore.blobs.base import fanout_path
from tvstore.util.atomic import write_atomic


#: files modified more recently than this are not marked (see above)
RACY_S = 2.0


def stamp(st: os.stat_result) -> str:
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}:{st.st_dev}"


class VerifiedMarks:
    """Marks under ``folder``, one small file per verified blob."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def has(self, digest: str, st: os.stat_result) -> bool:
        try:
            return fanout_path(self.folder, digest).read_text() == stamp(st)
        except OSError:
            return False

    def add(self, digest: str, st: os.stat_result) -> None:
        """Best effort: a mark that cannot be written (or a file too young to mark) costs the next read a hash."""
        if time.time() - st.st_mtime < RACY_S:
            return
        try:
            write_atomic(fanout_path(self.folder, digest), stamp(st).encode())
        except OSError:
            pass

    def drop(self, digest: str) -> None:
        fanout_path(self.folder, digest).unlink(missing_ok=True)


def read_file(path: Path) -> tuple[memoryview, os.stat_result]:
    """A file's bytes in a writable buffer and its stat (taken before reading).

    Writable, so a decoder may wrap it as a tensor without a copy; numpy
    memory, so it is not zero-filled first (as a ``bytearray`` is) and large
    reads land in huge pages.
    """
    with open(path, "rb", buffering=0) as f:
        st = os.fstat(f.fileno())
        data = memoryview(np.empty(st.st_size, dtype=np.uint8))
        pos = 0
        while pos < st.st_size:
            n = f.readinto(data[pos:])
            if not n:
                break
            pos += n
    return data[:pos], st  # shorter only if the file shrank while we read it


def map_file(path: Path) -> tuple[memoryview, os.stat_result]:
    """A file's bytes as a read-only mapping of the page cache, and its stat (taken before mapping).

    For a reader that only reads the bytes and drops them (a codec that
    decodes its payload into new memory): no copy out of the page cache, and
    no fresh pages for the kernel to zero, which a ``read`` into a new buffer
    costs. ``MAP_POPULATE`` maps every page in the one call, instead of a
    fault per page on first touch. The mapping lasts while any view of it does.
    """
    with open(path, "rb", buffering=0) as f:
        st = os.fstat(f.fileno())
        if not st.st_size:  # an empty file cannot be mapped
            return memoryview(b""), st
        flags = mmap.MAP_PRIVATE | getattr(mmap, "MAP_POPULATE", 0)
        return memoryview(mmap.mmap(f.fileno(), st.st_size, flags=flags, prot=mmap.PROT_READ)), st
