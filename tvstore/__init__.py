"""tvstore: a registry and storage system for task vectors.

    from tvstore import Registry
    with Registry.open() as reg:
        reg.add_base("minilm", "path/to/base")
        reg.push("bbc", "path/to/finetune", base="minilm")
        reg.pull_checkpoint("bbc", "rebuilt/")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tvstore.errors import TvstoreError

if TYPE_CHECKING:
    from tvstore.registry import Registry

__all__ = ["Registry", "TvstoreError"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # the registry pulls in torch and SQLAlchemy; importing tvstore.blobs or
    # tvstore.errors alone (subprocesses, tools) should not pay for them
    if name == "Registry":
        from tvstore.registry import Registry

        return Registry
    raise AttributeError(f"module 'tvstore' has no attribute {name!r}")
