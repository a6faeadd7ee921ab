"""A registry reached through ``tvstore serve``: the same facade, over HTTP."""

from tvstore.remote.registry import RemoteRegistry

__all__ = ["RemoteRegistry"]
