"""Bit packing, varints, support coding and mask packing against naive pure-Python references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from tvstore.codecs import bitpack
from tvstore.codecs.masks import decode_mask, encode_mask


def naive_pack(codes: list[int], bits: int) -> bytes:
    """Concatenate each code's bits, most significant first, zero-pad to a byte."""
    stream = "".join(format(c, f"0{bits}b") for c in codes)
    stream += "0" * (-len(stream) % 8)
    return bytes(int(stream[i : i + 8], 2) for i in range(0, len(stream), 8))


def naive_varints(values: list[int]) -> bytes:
    out = bytearray()
    for v in values:
        while True:
            byte, v = v & 0x7F, v >> 7
            out.append(byte | (0x80 if v else 0))
            if not v:
                break
    return bytes(out)


@st.composite
def codes_and_bits(draw: st.DrawFn) -> tuple[list[int], int]:
    bits = draw(st.integers(1, 8))
    codes = draw(st.lists(st.integers(0, (1 << bits) - 1), max_size=70))
    return codes, bits


@settings(max_examples=150, deadline=None)
@given(codes_and_bits())
def test_pack_bits_matches_naive_reference(case: tuple[list[int], int]) -> None:
    codes, bits = case
    packed = bitpack.pack_bits(np.array(codes, dtype=np.uint8), bits)
    assert packed == naive_pack(codes, bits)
    assert len(packed) == bitpack.packed_size(len(codes), bits)
    assert bitpack.unpack_bits(packed, bits, len(codes)).tolist() == codes


@pytest.mark.parametrize("bits", range(1, 9))
def test_pack_bits_large_round_trip(bits: int) -> None:
    codes = np.random.default_rng(bits).integers(0, 1 << bits, 100_003).astype(np.uint8)
    assert np.array_equal(bitpack.unpack_bits(bitpack.pack_bits(codes, bits), bits, codes.size), codes)


def test_bad_bits_and_short_data_are_rejected() -> None:
    with pytest.raises(ValueError, match="bits"):
        bitpack.pack_bits(np.zeros(3, dtype=np.uint8), 9)
    with pytest.raises(ValueError, match="packed data"):
        bitpack.unpack_bits(b"\x00", 4, 5)



@settings(max_examples=100, deadline=None)
@given(st.integers(1, 8).flatmap(lambda b: st.tuples(st.just(b), st.lists(st.integers(0, (1 << b) - 1), max_size=70))),
       st.sampled_from([np.uint16, np.float32, np.uint64]))
def test_lookup_is_the_table_indexed_by_the_unpacked_codes(case: tuple[int, list[int]], dtype: type) -> None:
    bits, codes = case
    values = (np.arange(1 << bits) * 7 + 3).astype(dtype)
    packed = bitpack.pack_bits(np.array(codes, dtype=np.uint8), bits)
    got = bitpack.lookup(packed, bits, len(codes), values)
    assert got.dtype == values.dtype and got.tolist() == [values[c] for c in codes]
    out = np.full(len(codes), 99, dtype=dtype)  # a caller's buffer: every entry overwritten, the tail too
    assert bitpack.lookup(packed, bits, len(codes), values, out=out) is out
    assert out.tolist() == [values[c] for c in codes]


@pytest.mark.parametrize("bits", [3, 4, 5])  # the whole-byte and the unpacking paths, over several steps
def test_lookup_across_steps_matches_the_unpacked_codes(bits: int) -> None:
    codes = np.random.default_rng(bits).integers(0, 1 << bits, 8 * bitpack.LOOKUP_STEP * 2 + 13).astype(np.uint8)
    values = np.random.default_rng(0).standard_normal(1 << bits).astype(np.float32)
    got = bitpack.lookup(bitpack.pack_bits(codes, bits), bits, codes.size, values)
    assert np.array_equal(got, values[codes])


def test_lookup_refuses_bad_widths_and_short_data() -> None:
    with pytest.raises(ValueError, match="bits must be in 1..8, got 9"):
        bitpack.lookup(b"\x00" * 8, 9, 8, np.zeros(512))
    with pytest.raises(ValueError, match="4-bit codes need 16 values, got 8"):
        bitpack.lookup(b"\x00" * 8, 4, 8, np.zeros(8))
    with pytest.raises(ValueError, match="packed data holds 1 bytes, 5 codes of 4 bits need 3"):
        bitpack.lookup(b"\x00", 4, 5, np.zeros(16))
    with pytest.raises(ValueError, match=r"lookup needs a contiguous output of 8 float64 entries, got \(7,\) float64"):
        bitpack.lookup(b"\x00" * 4, 4, 8, np.zeros(16), out=np.zeros(7))
    with pytest.raises(ValueError, match=r"lookup needs a contiguous output of 8 float64 entries, got \(8,\) float32"):
        bitpack.lookup(b"\x00" * 4, 4, 8, np.zeros(16), out=np.zeros(8, dtype=np.float32))
    with pytest.raises(ValueError, match="lookup needs a contiguous output"):
        bitpack.lookup(b"\x00" * 4, 4, 8, np.zeros(16), out=np.zeros(16)[::2])

@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1), max_size=40))
def test_varints_match_naive_reference(values: list[int]) -> None:
    data = bitpack.encode_varints(np.array(values, dtype=np.uint64))
    assert data == naive_varints(values)
    assert bitpack.decode_varints(data).tolist() == values


@settings(max_examples=120, deadline=None)
@given(st.integers(1, 3000).flatmap(lambda n: st.tuples(st.just(n), st.sets(st.integers(0, n - 1), max_size=n))))
def test_indices_round_trip(case: tuple[int, set[int]]) -> None:
    n, chosen = case
    pos = np.array(sorted(chosen), dtype=np.int64)
    data = bitpack.encode_indices(pos, n)
    assert bitpack.decode_indices(data, n).tolist() == pos.tolist()


def test_indices_pick_the_smaller_coding() -> None:
    n = 1 << 20
    sparse = np.arange(0, n, 4099, dtype=np.int64)
    dense = np.flatnonzero(np.random.default_rng(0).random(n) < 0.5)
    assert bitpack.encode_indices(sparse, n)[0] in (bitpack.VARINT_GAPS, bitpack.FIXED_GAPS)
    assert bitpack.encode_indices(dense, n)[0] == bitpack.BITMAP
    assert len(bitpack.encode_indices(sparse, n)) < 100  # constant gaps: zstd collapses them
    assert len(bitpack.encode_indices(np.zeros(0, dtype=np.int64), n)) <= 32


def test_indices_reject_bad_positions() -> None:
    with pytest.raises(ValueError):
        bitpack.encode_indices(np.array([3, 2]), 10)
    with pytest.raises(ValueError):
        bitpack.encode_indices(np.array([10]), 10)
    with pytest.raises(ValueError, match="coded for"):
        bitpack.decode_indices(bitpack.encode_indices(np.array([1]), 10), 11)


def naive_mask_bytes(bits: list[bool]) -> bytes:
    return naive_pack([int(b) for b in bits], 1)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.booleans(), max_size=200))
def test_mask_round_trip_and_packing(bits: list[bool]) -> None:
    mask = torch.tensor(bits, dtype=torch.bool)
    data = encode_mask(mask)
    assert zstandard.ZstdDecompressor().decompress(data[9:]) == naive_mask_bytes(bits)
    assert torch.equal(decode_mask(data, (len(bits),)), mask)


def test_all_zero_and_all_one_masks_are_tiny() -> None:
    for fill in (False, True):
        mask = torch.full((1000, 1000), fill)
        assert len(encode_mask(mask)) < 64
        assert torch.equal(decode_mask(encode_mask(mask), (1000, 1000)), mask)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=300))
def test_scatter_by_bitmap_matches_naive_placement(flags: list[bool]) -> None:
    bitmap = np.array(flags, dtype=np.uint8)
    values = np.arange(1, int(bitmap.sum()) + 1, dtype=np.int32) * 7
    expected, it = [], iter(values.tolist())
    for f in flags:
        expected.append(next(it) if f else 0)
    assert bitpack.scatter_by_bitmap(bitmap, values).tolist() == expected


def test_decode_bitmap_only_for_bitmap_coded_supports() -> None:
    n = 4096
    dense = np.flatnonzero(np.random.default_rng(1).random(n) < 0.5)
    flags = bitpack.decode_bitmap(bitpack.encode_indices(dense, n), n)
    assert flags is not None and np.array_equal(np.flatnonzero(flags), dense)
    assert bitpack.decode_bitmap(bitpack.encode_indices(np.array([5, 900]), n), n) is None
