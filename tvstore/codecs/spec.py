"""The one parser of the codec specs users type: ``lossless``, ``ternary:density=0.1,alpha=1``.

Every place that reads a spec (``push --codec``/``--codec-for``, ``merge
--codec``, ``pack --codec``/``--shared-codec``, a low-rank ``fallback``)
splits it here, so the grammar and its errors are the same everywhere:
``ID`` or ``ID:key=value,key=value``, values read as JSON (``4``, ``0.1``,
``true``, ``null``) or else as bare words (``fp16``), each key at most once.
"""

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


def split_codec_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"id:key=value,..."`` to ``(id, {key: value})``; ``CodecError`` on a malformed or repeated key."""
    codec_id, _, rest = spec.strip().partition(":")
    if not codec_id.strip():
        raise CodecError(f"bad codec spec {spec!r}: expected ID or ID:key=value,...")
    params: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = (s.strip() for s in item.partition("="))
        if not eq or not key:
            raise CodecError(f"bad codec parameter {item!r} in {spec!r}: expected key=value")
        if key in params:
            raise CodecError(f"codec parameter {key!r} given twice in {spec!r}")
        params[key] = _parse_value(value)
    return codec_id.strip(), params


def parse_codec_spec(spec: str, also: tuple[str, ...] = ()) -> Codec:
    """``"id"`` or ``"id:key=value,key=value"`` to a codec instance (``also``: see :func:`codec_class`)."""
    codec_id, params = split_codec_spec(spec)
    return codec_class(codec_id, also).from_config({"id": codec_id, **params})


def format_codec_spec(codec: Codec) -> str:
    """The inverse of :func:`parse_codec_spec`, for display."""
    config = codec.get_config()
    params = ",".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in config.items() if k != "id")
    return f"{config['id']}:{params}" if params else config["id"]
