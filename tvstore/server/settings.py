"""What ``tvstore serve`` was started with; passed to every worker process through the environment.

uvicorn starts each worker as a fresh process that imports the app factory,
so the command line's choices travel as ``TVSTORE_SERVE_*`` variables (and
the registry's own location as ``TVSTORE_HOME``/``TVSTORE_DATABASE_URL``/...).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from tvstore.util.units import parse_size

DEFAULT_MAX_BODY = "2GB"
ENV_PUBLIC_READ = "TVSTORE_SERVE_PUBLIC_READ"
ENV_MAX_BODY = "TVSTORE_SERVE_MAX_BODY"


@dataclass(frozen=True)
class ServeSettings:
    public_read: bool = False
    max_body: int = parse_size(DEFAULT_MAX_BODY)

    @classmethod
    def from_env(cls) -> ServeSettings:
        return cls(os.environ.get(ENV_PUBLIC_READ) == "1", parse_size(os.environ.get(ENV_MAX_BODY) or DEFAULT_MAX_BODY))

    def to_env(self) -> dict[str, str]:
        return {ENV_PUBLIC_READ: "1" if self.public_read else "0", ENV_MAX_BODY: str(self.max_body)}
