"""A rebuilt fine-tune as a ``transformers`` model in memory, for quick evaluation: no directory written.

The model is built from the base's ``config.json`` (plus overrides such as
``num_labels`` for a head the base config does not know) and the rebuilt
weights, through ``from_pretrained(None, config=..., state_dict=...)``, so
transformers applies its usual key prefixes, tied weights and dtype rules,
exactly as when the same weights are loaded from ``pull --checkpoint``.
"""

from __future__ import annotations

import json
from typing import Any

from tvstore.blobs import BlobStore
from tvstore.errors import UsageError
from tvstore.ops.pull import checkpoint_tensors, rebuilt_tensors
from tvstore.tensors.sources import BaseSource, VectorSource


def base_config(base: BaseSource, blobs: BlobStore) -> dict[str, Any]:
    """The base's ``config.json`` (the only side file this needs)."""
    for f in base.base.files:
        if f.path == "config.json":
            return json.loads(blobs.get(f.blob_digest))
    raise UsageError(f"base {base.base.name!r} has no config.json: transformers cannot build a model for it")


def load_model(base: BaseSource, vector: VectorSource, blobs: BlobStore, model_class: Any = None,
               config_overrides: dict[str, Any] | None = None) -> Any:
    """``model_class`` (default ``transformers.AutoModel``) holding base + vector, in eval mode."""
    try:
        import transformers
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    except ImportError:
        raise UsageError("loading a model needs transformers: pip install transformers") from None
    data = {**base_config(base, blobs), **(config_overrides or {})}
    if data.get("model_type") not in CONFIG_MAPPING:
        raise UsageError(f"base {base.base.name!r}: config.json model_type {data.get('model_type')!r} is unknown to transformers")
    config = CONFIG_MAPPING[data["model_type"]].from_dict(data)
    names = [info.name for info in checkpoint_tensors(base, vector)[0]]
    state = dict(rebuilt_tensors(base, vector, names))
    return _concrete(model_class or transformers.AutoModel, config).from_pretrained(
        None, config=config, state_dict=state).eval()


def _concrete(model_class: Any, config: Any) -> Any:
    """The architecture class an ``Auto*`` class picks for ``config`` (its ``from_pretrained`` wants a path)."""
    mapping = getattr(model_class, "_model_mapping", None)
    if mapping is None:
        return model_class
    from transformers.models.auto.auto_factory import _get_model_class

    try:
        return _get_model_class(config, mapping)
    except (KeyError, ValueError):
        raise UsageError(f"{model_class.__name__} has no class for model_type {config.model_type!r}") from None
