"""Codecs: one file per codec, all behind :class:`Codec`, found by codec id."""

from tvstore.codecs import lossless, lowrank, quant, raw, sign, sparse, svdmix, ternary  # noqa: F401  (register the codecs)
from tvstore.codecs.base import Codec, codec_class, codec_ids, get_codec, register_codec
from tvstore.codecs.spec import format_codec_spec, parse_codec_spec

__all__ = [
    "Codec",
    "codec_class",
    "codec_ids",
    "format_codec_spec",
    "get_codec",
    "parse_codec_spec",
    "register_codec",
]
