"""A tiny container format for codec payloads: a version byte, then sections.

Each section is ``u8 kind | u64 length | bytes`` where kind says whether the
bytes are zstd-compressed. Sections that zstd cannot shrink are kept raw, so
incompressible mantissas cost no decode time.
"""

from __future__ import annotations

import struct

import zstandard

RAW, ZSTD = 0, 1
_HEADER = struct.Struct("<BQ")


def compress_section(data: bytes, level: int = 3) -> bytes:
    """One framed section, zstd-compressed only if that makes it smaller."""
    packed = zstandard.ZstdCompressor(level=level).compress(data) if data else b""
    if len(packed) < len(data):
        return _HEADER.pack(ZSTD, len(packed)) + packed
    return _HEADER.pack(RAW, len(data)) + data


def pack(version: int, header: bytes, sections: list[bytes], level: int = 3) -> bytes:
    """``version`` byte, a fixed codec header, then compressed sections."""
    parts = [bytes([version]), struct.pack("<I", len(header)), header]
    parts += [compress_section(s, level) for s in sections]
    return b"".join(parts)


def unpack(data: bytes) -> tuple[int, bytes, list[bytes]]:
    """Inverse of :func:`pack`: (version, header, decompressed sections)."""
    view = memoryview(data)
    version = view[0]
    (hlen,) = struct.unpack_from("<I", view, 1)
    header = bytes(view[5 : 5 + hlen])
    pos, sections = 5 + hlen, []
    dctx = zstandard.ZstdDecompressor()
    while pos < len(view):
        kind, length = _HEADER.unpack_from(view, pos)
        pos += _HEADER.size
        body = view[pos : pos + length]
        if len(body) != length:
            raise ValueError("payload truncated")
        pos += length
        sections.append(dctx.decompress(body) if kind == ZSTD else bytes(body))
    return version, header, sections
