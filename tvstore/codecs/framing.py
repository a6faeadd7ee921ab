"""A tiny container format for codec payloads: a version byte, then sections.

Each section is ``u8 kind | u64 length | bytes`` where kind says whether the
bytes are zstd-compressed. Sections that zstd cannot shrink are kept raw, so
incompressible mantissas cost no decode time.

With ``probe`` (what ZipNN does), a large section is first judged on a small
sample: if zstd cannot shrink the sample by at least 10%, the whole section is
stored raw without paying for compressing megabytes of near-random bytes.
The format is the same either way; only the writer's effort differs.
"""

from __future__ import annotations

import struct
import threading

import zstandard

RAW, ZSTD = 0, 1
_HEADER = struct.Struct("<BQ")
_PROBE_MIN = 1 << 20  # sections smaller than this are simply compressed
_PROBE_SLICES, _PROBE_SLICE = 4, 32 * 1024
# compress only if the sample shrinks below this fraction: a plane zstd shrinks by less than 10% (the
# low byte of bf16 XOR bits is such a plane) would cost every read a decode pass for a small saving.
# The trade (ratio against decode speed, next to ZipNN) is in benchmarks/results/rebuild.md.
_PROBE_KEEP = 0.90
_local = threading.local()  # zstd contexts cost ~10 us each to create: one per thread and level


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache = _local.__dict__.setdefault("compressors", {})
    if level not in cache:
        cache[level] = zstandard.ZstdCompressor(level=level)
    return cache[level]


def _decompressor() -> zstandard.ZstdDecompressor:
    if not hasattr(_local, "decompressor"):
        _local.decompressor = zstandard.ZstdDecompressor()
    return _local.decompressor


def _worth_compressing(data, level: int) -> bool:
    """Whether a sample of ``data`` (start, middle and end slices) shrinks under zstd."""
    view = memoryview(data).cast("B")
    n = len(view)
    stride = (n - _PROBE_SLICE) // (_PROBE_SLICES - 1)
    sample = b"".join(view[k * stride : k * stride + _PROBE_SLICE] for k in range(_PROBE_SLICES))
    packed = _compressor(level).compress(sample)
    return len(packed) < _PROBE_KEEP * len(sample)


def _section(data, level: int, probe: bool) -> tuple[bytes, bytes | memoryview]:
    """One framed section as (header, body): zstd-compressed only if that makes it smaller (any buffer in).

    A raw body is a view of ``data``, so :func:`pack` copies it once, into the payload.
    """
    size = memoryview(data).nbytes
    if size and (not probe or size < _PROBE_MIN or _worth_compressing(data, level)):
        packed = _compressor(level).compress(data)
        if len(packed) < size:
            return _HEADER.pack(ZSTD, len(packed)), packed
    return _HEADER.pack(RAW, size), memoryview(data).cast("B")


def pack(version: int, header: bytes, sections: list, level: int = 3, probe: bool = False) -> bytes:
    """``version`` byte, a fixed codec header, then compressed sections."""
    parts = [bytes([version]), struct.pack("<I", len(header)), header]
    for section in sections:
        parts += _section(section, level, probe)
    return b"".join(parts)


def unpack_views(data: bytes) -> tuple[int, bytes, list[bytes | memoryview]]:
    """Like :func:`unpack`, but raw sections are zero-copy views into ``data``."""
    view = memoryview(data)
    version = view[0]
    (hlen,) = struct.unpack_from("<I", view, 1)
    header = bytes(view[5 : 5 + hlen])
    pos, sections = 5 + hlen, []
    dctx = _decompressor()
    while pos < len(view):
        kind, length = _HEADER.unpack_from(view, pos)
        pos += _HEADER.size
        body = view[pos : pos + length]
        if len(body) != length:
            raise ValueError("payload truncated")
        pos += length
        sections.append(dctx.decompress(body) if kind == ZSTD else body)
    return version, header, sections


def unpack(data: bytes) -> tuple[int, bytes, list[bytes]]:
    """Inverse of :func:`pack`: (version, header, decompressed sections)."""
    version, header, sections = unpack_views(data)
    return version, header, [s if isinstance(s, bytes) else bytes(s) for s in sections]
