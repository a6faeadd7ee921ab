"""The folders a command writes into: created with the user's umask, refused in one line when they cannot be.

``tempfile.mkdtemp``/``mkstemp`` make private (0700/0600) entries, right for
scratch space but wrong for a checkpoint a user asked for: a team's shared
folder must get what ``mkdir``/``open`` would give, i.e. follow the umask.
"""

from __future__ import annotations

import os
from pathlib import Path

from tvstore.errors import TvstoreError, UsageError


def writable(path: Path) -> bool:
    """Whether this process may write ``path``, as its effective user with its capabilities."""
    return os.access(path, os.W_OK, effective_ids=os.access in os.supports_effective_ids)


def umask() -> int:
    """The process umask, read from /proc where possible (``os.umask`` sets it to read it: racy with threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def as_if_created(path: Path) -> None:
    """Give a temporary-made ``path`` the mode ``mkdir``/``open`` would have given it under the umask."""
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask())


def make_folder(folder: Path, purpose: str) -> None:
    """``mkdir -p folder`` that must end writable; a file in the way or a read-only folder is one line naming it."""
    in_the_way = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if in_the_way is not None:
        raise UsageError(f"cannot create {purpose} {folder}: {in_the_way} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TvstoreError(f"cannot create {purpose} {folder}: {(exc.strerror or str(exc)).lower()}") from None
    if not writable(folder):
        raise TvstoreError(f"cannot write into {purpose} {folder}: permission denied")
