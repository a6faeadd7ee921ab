"""Exact pushes store the fine-tune's bits XOR the base's (one ``xor`` component per tensor).

What must hold: the rebuild is bit-exact for every float dtype and every
awkward value (signed zeros, subnormals, the largest finite values, sign
flips); tau read from an ``xor`` component is bitwise the stored-dtype
``ft - base`` that the older ``add`` + ``fix`` form held, so merges read the
same numbers; another exact codec (``raw``) keeps the ``add`` + ``fix`` form
and still rebuilds exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from tvstore import Registry
from tvstore.codecs import framing, planes
from tvstore.codecs.encoded import XOR
from tvstore.codecs.lossless import Lossless
from tvstore.tensors.components import Component, delta, mapping_fetch, rebuild
from tvstore.tensors.encode import encode_delta

AWKWARD = [0.0, -0.0, 1e-40, -1e-40, 3.0, -3.0, 65000.0, 1e-3]


def pair(dtype: torch.dtype, seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(96, 40, generator=g) * 0.02
    base = {"w": w.to(dtype), "edge": torch.tensor(AWKWARD).to(dtype)}
    ft = {"w": (w + torch.randn(96, 40, generator=g) * 0.002).to(dtype),
          "edge": torch.tensor([-0.0, 0.0, 2e-40, 1e-40, -3.0, 3.5, 64000.0, 1e-3]).to(dtype)}
    return base, ft


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view({2: torch.int16, 4: torch.int32}[t.element_size()])


def saved(tmp_path: Path, name: str, tensors: dict[str, torch.Tensor]) -> Path:
    path = tmp_path / f"{name}.safetensors"
    save_file(tensors, str(path))
    return path


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
def test_encoded_xor_rebuilds_exactly_and_its_tau_is_the_stored_dtype_delta(dtype: torch.dtype) -> None:
    base, ft = pair(dtype)
    for name in base:
        enc = encode_delta(name, ft[name] - base[name], Lossless(), exact_target=(ft[name], base[name]))
        assert [c.kind for c in enc.components] == [XOR]
        assert enc.stats.rel_l2 == 0.0
        payloads = {str(i): c.payload for i, c in enumerate(enc.components)}
        comps = [Component(c.codec, str(i), kind=c.kind) for i, c in enumerate(enc.components)]
        theta = rebuild(base[name].clone(), comps, mapping_fetch(payloads))
        assert torch.equal(bits(theta), bits(ft[name]))
        tau = delta(comps, tuple(base[name].shape), dtype, mapping_fetch(payloads), base=lambda: base[name])
        assert torch.equal(bits(tau), bits(ft[name] - base[name]))


def test_an_xor_tau_without_the_base_is_an_internal_error() -> None:
    base, ft = pair(torch.bfloat16)
    enc = encode_delta("w", ft["w"] - base["w"], Lossless(), exact_target=(ft["w"], base["w"]))
    comp = Component(enc.components[0].codec, "p", kind=XOR)
    with pytest.raises(Exception, match="an xor component's tau needs the base tensor"):
        delta([comp], (96, 40), torch.bfloat16, mapping_fetch({"p": enc.components[0].payload}))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_lossless_push_is_one_xor_per_tensor_and_pulls_bit_exact(registry: Registry, tmp_path: Path,
                                                                  dtype: torch.dtype) -> None:
    base, ft = pair(dtype, seed=5)
    registry.add_base("b", saved(tmp_path, "base", base))
    registry.push("v", saved(tmp_path, "ft", ft), base="b", codec="lossless")
    source = registry.delta_tensors("v")
    assert {n: [c.kind for c in source.components(n)] for n in source} == {"w": [XOR], "edge": [XOR]}
    for name in base:
        assert torch.equal(bits(source.get(name)), bits(ft[name] - base[name]))
    registry.pull_checkpoint("v", tmp_path / "out")
    rebuilt = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert all(torch.equal(bits(rebuilt[n]), bits(ft[n])) for n in ft)
    registry.pull("v", tmp_path / "tau.safetensors")  # the vector itself: tau, read through the base
    tau = load_file(str(tmp_path / "tau.safetensors"))
    assert all(torch.equal(bits(tau[n]), bits(ft[n] - base[n])) for n in ft)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)  # fp32: tau rebuilt in the merge's buffer
def test_merges_read_the_same_tau_from_xor_and_from_add_plus_fix(registry: Registry, tmp_path: Path,
                                                                  dtype: torch.dtype) -> None:
    """The ``raw`` exact codec still stores tau + fix: a merge of either form gives the same bits."""
    base, ft = pair(dtype, seed=7)
    registry.add_base("b", saved(tmp_path, "base", base))
    ft_path = saved(tmp_path, "ft", ft)
    registry.push("x", ft_path, base="b", codec="lossless")
    registry.push("r", ft_path, base="b", codec="raw")
    assert [c.kind for c in registry.delta_tensors("r").components("w")][0] == "add"
    merged = {}
    for ref in ("x", "r"):
        recipe = {"method": "task_arithmetic", "inputs": [{"ref": ref, "weight": 0.7}]}
        merged[ref] = dict(registry.merge(recipe))
    assert merged["x"].keys() == merged["r"].keys()
    assert all(torch.equal(bits(merged["x"][n]), bits(merged["r"][n])) for n in merged["x"])


def test_another_exact_codec_keeps_add_plus_fix_and_rebuilds_exactly(registry: Registry, tmp_path: Path) -> None:
    base, ft = pair(torch.bfloat16, seed=9)
    registry.add_base("b", saved(tmp_path, "base", base))
    registry.push("v", saved(tmp_path, "ft", ft), base="b", codec="raw")
    assert [c.kind for c in registry.delta_tensors("v").components("w")] == ["add", "fix"]
    registry.pull_checkpoint("v", tmp_path / "out")
    rebuilt = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert all(torch.equal(bits(rebuilt[n]), bits(ft[n])) for n in ft)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_xor_into_applies_each_plane_in_place(dtype: torch.dtype) -> None:
    """The planes go straight into ``out``'s bytes; a rotated (float) payload takes the decoding path, same bits."""
    base, ft = pair(dtype, seed=11)
    ints = {2: torch.int16, 4: torch.int32}[base["w"].element_size()]
    x = ft["w"].view(ints) ^ base["w"].view(ints)
    for payload in (Lossless().encode(x), Lossless().encode(x.view(dtype))):  # plain ints, rotated floats
        out = base["w"].clone()
        assert Lossless().xor_into(payload, out) is out
        assert torch.equal(bits(out), bits(ft["w"]))
    with pytest.raises(ValueError, match="lossless payload holds"):
        Lossless().xor_into(Lossless().encode(x), base["edge"].clone())


@pytest.mark.parametrize("width", [1, 2, 4, 8])
def test_xor_planes_into_matches_joining_then_xoring_across_chunks(width: int) -> None:
    """Every width, over more elements than three cache-sized chunks and a ragged end."""
    rng = np.random.default_rng(width)
    n = 3 * (planes._CHUNK_BYTES // width) + 7
    words = rng.integers(0, 256, n * width, dtype=np.uint8).view(planes.UINT[width])
    out = rng.integers(0, 256, n * width, dtype=np.uint8)
    expected = out.view(planes.UINT[width]) ^ words
    planes.xor_planes_into(planes.split_planes(words), width, out)
    assert np.array_equal(out.view(planes.UINT[width]), expected)


def close_xor(dtype: torch.dtype, n: int, step: float, seed: int = 0) -> torch.Tensor:
    """Bits of weights XOR those of a copy changed by ``step`` of their scale (a fine-tune's XOR)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, generator=g).to(dtype)
    ft = (w.float() * (1 + step * torch.randn(n, generator=g))).to(dtype)
    ints = {2: torch.int16, 4: torch.int32}[w.element_size()]
    return ft.view(ints) ^ w.view(ints)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
def test_a_mostly_zero_top_plane_is_coded_in_four_bits_and_decodes_exactly(dtype: torch.dtype) -> None:
    """A fine-tune's XOR bits: version 2, smaller than zstd planes, exact through decode and xor_into.

    An odd count and values outside the 15-entry table (escapes) are both exercised.
    """
    x = close_xor(dtype, 200_001, 1e-1)
    limits = torch.iinfo(x.dtype)
    x[::3000] = torch.randint(limits.min, limits.max, x[::3000].shape, generator=torch.Generator().manual_seed(5))
    top = planes.rotated_planes(planes.as_uint(x), False)[0]
    assert 0 < int((~np.isin(top, np.argsort(-np.bincount(top, minlength=256))[:15])).sum())  # escapes exist
    payload = Lossless().encode(x)
    assert payload[0] == 2
    old_format = framing.pack(1, payload[5:7], planes.rotated_planes(planes.as_uint(x), False), 1, probe=True)
    assert len(payload) < len(old_format)
    assert torch.equal(Lossless().decode(payload, (x.numel(),), x.dtype), x)
    assert torch.equal(Lossless().decode(old_format, (x.numel(),), x.dtype), x)
    out = torch.zeros_like(x)
    assert torch.equal(Lossless().xor_into(payload, out), x)


def test_a_spread_top_plane_keeps_the_version_1_layout() -> None:
    """Random bits: far more than 1/256 of top bytes fall outside any 15 values, so zstd planes stay."""
    x = torch.randint(-(1 << 15), 1 << 15, (100_000,), dtype=torch.int16, generator=torch.Generator().manual_seed(3))
    payload = Lossless().encode(x)
    assert payload[0] == 1
    assert torch.equal(Lossless().decode(payload, (x.numel(),), x.dtype), x)
