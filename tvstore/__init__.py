"""tvstore: a registry and storage system for task vectors.

    from tvstore import Registry
    with Registry.open() as reg:
        reg.add_base("minilm", "path/to/base")
        reg.push("bbc", "path/to/finetune", base="minilm")
        reg.pull_checkpoint("bbc", "rebuilt/")
"""

from tvstore.errors import TvstoreError
from tvstore.registry import Registry

__all__ = ["Registry", "TvstoreError"]
__version__ = "0.1.0"
