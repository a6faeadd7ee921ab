"""Exact rebuilds: the ``fix`` component sets the entries where ``base + tau`` misses the fine-tune.

Pushes store a raw fix (only the missed entries, in order); pushes before that
stored a dense lossless tensor with zeros elsewhere. Both must rebuild bit for bit.
"""

from __future__ import annotations

import torch

from tvstore.blobs.base import digest_bytes
from tvstore.codecs.encoded import ADD, FIX
from tvstore.codecs.lossless import Lossless
from tvstore.codecs.masks import encode_mask
from tvstore.tensors.components import Component, mapping_fetch, rebuild
from tvstore.tensors.encode import exactness_fix


def bf16_pair() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    base = (torch.randn(64, 48, generator=g) * 0.02).to(torch.bfloat16)
    target = (base.float() + torch.randn(64, 48, generator=g) * 0.002).to(torch.bfloat16)
    return base, target


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int16)


def stored(blobs: dict[str, bytes], data: bytes) -> str:
    blobs[digest_bytes(data)] = data
    return digest_bytes(data)


def test_raw_fix_holds_only_the_missed_entries_and_rebuilds_bit_exact() -> None:
    base, target = bf16_pair()
    tau = target - base
    missed = bits(base + tau) != bits(target)
    assert 0 < int(missed.sum()) < target.numel() // 4  # the case this exists for
    fix = exactness_fix(target, base, tau)
    assert fix is not None and fix.codec == {"id": "raw"} and len(fix.payload) == 2 * int(missed.sum())
    blobs: dict[str, bytes] = {}
    comps = [Component(Lossless().get_config(), stored(blobs, Lossless().encode(tau))),
             Component(fix.codec, stored(blobs, fix.payload), mask_blob=stored(blobs, fix.mask), kind=FIX)]
    assert torch.equal(bits(rebuild(base, comps, mapping_fetch(blobs))), bits(target))
    own = base.clone()
    assert torch.equal(bits(rebuild(own, comps, mapping_fetch(blobs), in_place=True)), bits(target))
    assert torch.equal(bits(own), bits(target))  # in place: the caller's buffer is the result


def test_dense_fix_of_older_pushes_still_rebuilds_bit_exact() -> None:
    base, target = bf16_pair()
    tau = target - base
    missed = bits(base + tau) != bits(target)
    dense = torch.where(missed, target, torch.zeros((), dtype=target.dtype))
    blobs: dict[str, bytes] = {}
    comps = [Component(Lossless().get_config(), stored(blobs, Lossless().encode(tau)), kind=ADD),
             Component(Lossless().get_config(), stored(blobs, Lossless().encode(dense)),
                       mask_blob=stored(blobs, encode_mask(missed)), kind=FIX)]
    assert torch.equal(bits(rebuild(base, comps, mapping_fetch(blobs))), bits(target))


def test_no_fix_when_the_sum_is_already_exact() -> None:
    base = torch.tensor([1.0, 2.0, 4.0], dtype=torch.bfloat16)
    target = torch.tensor([1.5, 2.5, 5.0], dtype=torch.bfloat16)
    assert exactness_fix(target, base, target - base) is None
