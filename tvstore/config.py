"""Where a registry lives: ``TVSTORE_HOME`` (SQLite file + blob folder) or explicit URLs.

Precedence: explicit argument (CLI flag) > environment variable > home default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tvstore.util.folders import make_folder

DEFAULT_HOME = "~/.tvstore"
DB_FILE = "registry.db"
BLOB_DIR = "blobs"


@dataclass(frozen=True)
class Location:
    home: Path
    database_url: str
    blob_url: str

    @classmethod
    def resolve(
        cls,
        home: str | os.PathLike[str] | None = None,
        database_url: str | None = None,
        blob_url: str | None = None,
    ) -> Location:
        home_path = Path(home or os.environ.get("TVSTORE_HOME") or DEFAULT_HOME).expanduser().resolve()
        db = database_url or os.environ.get("TVSTORE_DATABASE_URL") or f"sqlite:///{home_path / DB_FILE}"
        blobs = blob_url or os.environ.get("TVSTORE_BLOB_URL") or str(home_path / BLOB_DIR)
        return cls(home_path, db, blobs)

    @property
    def uses_home(self) -> bool:
        """Whether any part of the registry is stored under ``home`` (so it must exist)."""
        return self.database_url.startswith("sqlite:///" + str(self.home)) or self.blob_url.startswith(str(self.home))

    def ensure_home(self) -> None:
        """Create the home folder if any part of the registry lives in it; one line if that cannot be."""
        if self.uses_home:
            make_folder(self.home, "registry home")
