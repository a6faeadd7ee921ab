"""The push pipeline's fast paths: chunked passes and memory-budgeted parallelism give the same answers.

Tensors here are larger than one chunk (:data:`tvstore.tensors.metrics.CHUNK`)
and not a multiple of it, so every loop crosses chunk boundaries and ends on a
partial chunk; the references are the plain whole-tensor computations.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from tvstore import Registry
from tvstore.codecs.quant import Quant, _padded64, group_ranges, group_view_shape, min_max_params, quantize, quantize_blocks
from tvstore.tensors.encode import difference
from tvstore.tensors.metrics import CHUNK, ErrorStats
from tvstore.util.parallel import budgeted_map

N = 3 * CHUNK + 123


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view({2: torch.int16, 4: torch.int32}[t.element_size()])


def bf16_pair(n: int = N, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    base = (torch.randn(n, generator=g) * 0.02).to(torch.bfloat16)
    target = (base.float() + torch.randn(n, generator=g) * 0.002).to(torch.bfloat16)
    return base, target


def test_difference_is_the_plain_subtraction_with_its_misses_and_sum_of_squares() -> None:
    base, target = bf16_pair()
    diff = difference(target, base)
    tau = target - base
    assert torch.equal(bits(diff.tau), bits(tau))
    missed = bits(base + tau) != bits(target)
    assert int(missed.sum()) > 0 and diff.miss is not None and torch.equal(diff.miss, missed)
    assert diff.sum_sq == pytest.approx(float(torch.sum(tau.double() ** 2)), rel=1e-6)
    assert difference(target, base, misses=False).miss is None
    alone = difference(target, base, misses=False, keep_tau=False)  # the sums only, tau a chunk at a time
    assert alone.tau.numel() == 0 and alone.miss is None and alone.sum_sq == diff.sum_sq


def test_difference_of_an_exact_sum_has_no_misses() -> None:
    base = torch.full((N,), 1.0, dtype=torch.bfloat16)
    target = torch.full((N,), 1.5, dtype=torch.bfloat16)
    diff = difference(target, base)
    assert diff.miss is None and diff.sum_sq == 0.25 * N


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64], ids=str)
def test_error_stats_match_float64_sums(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, generator=g).to(dtype)
    y = (x.double() + torch.randn(N, generator=g, dtype=torch.float64) * 0.1).to(dtype)
    got = ErrorStats.of(x, y)
    xd, yd = x.double(), y.double()
    want = [float((xd * xd).sum()), float((yd * yd).sum()), float(((xd - yd) ** 2).sum()), float((xd * yd).sum())]
    assert [got.ref_sq, got.rec_sq, got.err_sq, got.dot] == pytest.approx(want, rel=1e-5)
    same = ErrorStats.of(x, x)
    assert same.ref_sq == same.rec_sq == same.dot == pytest.approx(want[0], rel=1e-5) and same.err_sq == 0.0


@pytest.mark.parametrize(
    "shape,granularity,group_size",
    [((N,), "tensor", 128), ((257, 1031), "channel", 128), ((N,), "group", 128), ((N,), "group", 40_000),
     ((3, 90_001), "channel", 128)],
)
def test_blockwise_quantization_gives_the_whole_array_codes(shape, granularity: str, group_size: int) -> None:
    flat = (torch.randn(shape, generator=torch.Generator().manual_seed(2)) * 0.01).to(torch.bfloat16).reshape(-1)
    groups, width = group_view_shape(shape, granularity, group_size)
    x = _padded64(flat, groups, width)
    params = min_max_params(x, 4)
    lo, hi = group_ranges(flat, groups, width)
    assert np.array_equal(lo, x.min(axis=1)) and np.array_equal(hi, x.max(axis=1))
    assert np.array_equal(quantize_blocks(flat, groups, width, params, 4), quantize(x, params, 4))


@pytest.mark.parametrize("code_bits", [3, 4, 8])  # 4 and 8: one-group tensors decode by table lookup, block by block too
@pytest.mark.parametrize("offset", [0.0, 1e6], ids=["float32-decode", "float64-decode"])
@pytest.mark.parametrize("granularity,group_size", [("tensor", 128), ("channel", 128), ("group", 128), ("group", 40_000)])
def test_quant_blocks_decode_bitwise_as_the_whole_tensor(granularity: str, group_size: int, offset: float,
                                                         code_bits: int) -> None:
    x = torch.randn(3, 90_001, generator=torch.Generator().manual_seed(4), dtype=torch.float64) + offset
    codec = Quant(bits=code_bits, granularity=granularity, group_size=group_size)
    payload = codec.encode(x.float())
    whole = codec.decode(payload, (3, 90_001), torch.bfloat16).reshape(-1)
    blocks = list(codec.decode_blocks(payload, (3, 90_001), torch.bfloat16))
    assert len(blocks) > 1 and torch.equal(bits(torch.cat(blocks)), bits(whole))
    by_blocks, by_whole = ErrorStats.of_blocks(x, blocks), ErrorStats.of(x, whole)
    assert by_blocks.rel_l2 > 0 and by_blocks.rel_l2 == pytest.approx(by_whole.rel_l2, rel=1e-12)  # sums split differently
    assert by_blocks.cosine == pytest.approx(by_whole.cosine, rel=1e-12)


def test_budgeted_map_keeps_input_order_and_never_runs_past_its_budget() -> None:
    costs = [5, 1, 9, 2, 9, 1, 1, 3, 8, 1]
    lock, running, peaks = threading.Lock(), [0], []

    def work(k: int) -> int:
        with lock:
            running[0] += costs[k]
            peaks.append(running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= costs[k]
        return k * k

    out = list(budgeted_map(work, list(range(len(costs))), costs.__getitem__, budget=10, workers=4))
    assert out == [k * k for k in range(len(costs))]
    assert max(peaks) == 10  # a 9 ran beside a 1, never beside another 9 or the 5


def test_budgeted_map_runs_an_item_over_budget_alone_and_passes_errors_on() -> None:
    assert list(budgeted_map(lambda k: -k, [3, 50, 4], lambda k: k, budget=10, workers=2)) == [-3, -50, -4]

    def boom(k: int) -> int:
        if k == 2:
            raise ValueError("tensor 2 is bad")
        return k

    with pytest.raises(ValueError, match="^tensor 2 is bad$"):
        list(budgeted_map(boom, [1, 2, 3], lambda k: 1, budget=2, workers=2))


@pytest.mark.parametrize("codec", ["lossless", "quant:bits=4"])
def test_push_of_tensors_larger_than_a_chunk_pulls_back(registry: Registry, tmp_path: Path, codec: str) -> None:
    g = torch.Generator().manual_seed(7)
    base = {"big": (torch.randn(301, 700, generator=g) * 0.02).to(torch.bfloat16),
            "small": (torch.randn(64, generator=g) * 0.02).to(torch.bfloat16)}
    ft = {k: (v.float() + torch.randn(v.shape, generator=g) * 0.002).to(torch.bfloat16) for k, v in base.items()}
    save_file(base, str(tmp_path / "base.safetensors"))
    save_file(ft, str(tmp_path / "ft.safetensors"))
    registry.add_base("b", tmp_path / "base.safetensors")
    info = registry.push("v", tmp_path / "ft.safetensors", base="b", codec=codec)
    registry.pull_checkpoint("v", tmp_path / "out")
    rebuilt = load_file(tmp_path / "out" / "model.safetensors")
    if codec == "lossless":
        assert info.rel_l2 == 0.0 and all(torch.equal(bits(rebuilt[k]), bits(ft[k])) for k in ft)
        return
    tau = {k: ft[k] - base[k] for k in ft}
    total = ErrorStats()
    for k in ft:
        total += ErrorStats.of(tau[k], registry.delta_tensors("v")[k])
    assert 0 < info.rel_l2 == pytest.approx(total.rel_l2, rel=1e-9) and info.rel_l2 < 0.2
