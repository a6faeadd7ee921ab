"""A signed support in one of two section layouts: what ``ternary`` and ``sign`` share.

Both codecs keep a support (positions) and one sign per kept entry, then
scale. The support and signs travel either as *codes*, one 2-bit code per
entry (0 dropped, 1 = +, 2 = -; zstd's Huffman stage brings them near the
ternary entropy and they decode without a scatter), or as *positions*, the
gap-coded support plus one packed sign bit per kept entry (smaller at low
densities). The byte layouts are fixed by the golden fixtures of both codecs.
"""

from __future__ import annotations

import numpy as np

from tvstore.codecs import bitpack


def codes_section(positions: np.ndarray, negative: np.ndarray, n: int) -> bytes:
    """The *codes* layout: one section. ``negative`` is per kept entry, in ``positions`` order."""
    codes = np.zeros(n, dtype=np.uint8)
    codes[positions] = 1 + negative
    return bitpack.pack_bits(codes, 2)


def positions_sections(positions: np.ndarray, negative: np.ndarray, n: int) -> list[bytes]:
    """The *positions* layout: two sections (support, sign bits)."""
    return [bitpack.encode_indices(positions, n), bitpack.pack_bits(negative, 1)]


def signs_from_codes(section: bytes | memoryview, n: int) -> np.ndarray:
    """int8 per entry: 0, +1 or -1 (branch-free: ``(c & 1) - (c >> 1)``)."""
    codes = bitpack.unpack_bits(section, 2, n).view(np.int8)
    return (codes & 1) - (codes >> 1)


def support_from_positions(sections: list, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(positions, negative)`` from the two *positions* sections; ``negative`` is a bool per kept entry."""
    positions = bitpack.decode_indices(sections[0], n)
    return positions, bitpack.unpack_bits(sections[1], 1, positions.size).view(np.bool_)
