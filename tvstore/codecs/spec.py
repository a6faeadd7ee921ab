"""Parse the codec specs users type: ``lossless``, ``ternary:density=0.1,alpha=1``."""

from __future__ import annotations

import json
from typing import Any

from tvstore.codecs.base import Codec, codec_class
from tvstore.errors import CodecError


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # bare words such as dtype=fp16


def parse_codec_spec(spec: str) -> Codec:
    """``"id"`` or ``"id:key=value,key=value"`` to a codec instance."""
    codec_id, _, rest = spec.strip().partition(":")
    params: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise CodecError(f"bad codec parameter {item!r} in {spec!r}: expected key=value")
        params[key.strip()] = _parse_value(value.strip())
    return codec_class(codec_id).from_config({"id": codec_id, **params})


def format_codec_spec(codec: Codec) -> str:
    """The inverse of :func:`parse_codec_spec`, for display."""
    config = codec.get_config()
    params = ",".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in config.items() if k != "id")
    return f"{config['id']}:{params}" if params else config["id"]
