"""The core abstraction: a stored tensor is a sum of codec components over blobs.

    tau[name] = sum_i  scale_i * (mask_i ⊙ decode(codec_i, blob_i))

Every codec, plain or shared across a group (RTVQ base + offset, TALL's
multi-task vector + mask, EMR's unified vector + mask + rescaler), is
expressed as a list of components, so reading a tensor never depends on
which codec wrote it.

Two more kinds exist for exactness. Floating-point addition cannot always
undo subtraction (``base + (ft - base) != ft`` for a few percent of bf16
entries, and for signed zeros), so older exact pushes recorded the entries
where the sum misses the fine-tune in a ``fix`` component, set directly when
a checkpoint is rebuilt. Exact pushes now store one ``xor`` component
instead: the fine-tune's bits XOR the base's. Its rebuild is a single XOR
(no float add, no fix-up pass, the cheapest exact rebuild there is) and it
compresses better, since a small change leaves sign and exponent bits
equal. Its tau is ``(base ^ x) - base`` in the stored dtype, the very value
the ``add`` component held, so merges read the same numbers either way; it
is the one kind that needs the base to yield tau. ``fix`` components never
enter task arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from tvstore.codecs import get_codec
from tvstore.codecs.encoded import ADD, FIX, XOR, EncodedComponent
from tvstore.codecs.masks import decode_mask
from tvstore.codecs.planes import as_uint, int_view
from tvstore.errors import TvstoreError


class Fetch(Protocol):
    """A blob's verified bytes by digest.

    ``transient``: the caller only reads the bytes and drops them before it
    returns (the codec decodes them into new memory, or they are a mask), so
    they may be a read-only mapping of the blob file (``BlobStore.view``)
    rather than a copy. Otherwise they are writable and the caller may keep
    them (``raw`` wraps them as the decoded tensor).
    """

    def __call__(self, digest: str, *, transient: bool = False) -> bytes | memoryview: ...


BaseFetch = Callable[[], torch.Tensor]  # the base's tensor, read only if a component needs it


@dataclass(frozen=True)
class Component:
    """One term of a stored tensor: blobs are referenced by digest."""

    codec: dict[str, Any]
    blob: str
    scale: float = 1.0
    mask_blob: str | None = None
    kind: str = ADD

    def decode(self, shape: tuple[int, ...], dtype: torch.dtype, fetch: Fetch) -> torch.Tensor:
        """The component's term; for ``xor``, the bit pattern as integers of ``dtype``'s width."""
        if self.kind == XOR:
            return decode_blob(self.codec, self.blob, shape, int_view(dtype), fetch)
        value = decode_blob(self.codec, self.blob, shape, dtype, fetch)
        if self.kind == ADD:
            if self.mask_blob is not None:
                value = torch.where(_mask(fetch, self.mask_blob, shape), value, torch.zeros((), dtype=dtype))
            if self.scale != 1.0:
                value = value * self.scale
        return value


def decode_blob(codec_config: dict[str, Any], digest: str, shape: tuple[int, ...], dtype: torch.dtype,
                fetch: Fetch) -> torch.Tensor:
    """One blob decoded by its codec; its bytes are mapped, not copied, when the codec only reads them."""
    codec = get_codec(codec_config)
    return codec.decode(fetch(digest, transient=not codec.keeps_payload), shape, dtype)


def delta(components: Sequence[Component], shape: tuple[int, ...], dtype: torch.dtype, fetch: Fetch,
          out: torch.Tensor | None = None, base: BaseFetch | None = None) -> torch.Tensor:
    """tau for one tensor: the sum of its ``add`` components (zeros if none), or ``theta - base`` for ``xor``.

    With ``out`` (a buffer of ``shape``, any float dtype) the sum lands there
    and ``out`` is returned; the first plain component is decoded into it
    (``Codec.decode_into``: straight, for the codecs that can), so a merge's
    input buffer is filled without an intermediate tensor. ``base`` is called
    only for an ``xor`` component.
    """
    if any(c.kind == XOR for c in components):
        return _xor_delta(components, fetch, base, out)
    adds = [c for c in components if c.kind == ADD]
    if out is not None:
        return _delta_into(adds, shape, dtype, fetch, out)
    total: torch.Tensor | None = None
    for comp in adds:
        value = comp.decode(shape, dtype, fetch)
        total = value if total is None else total.add_(value)
    return total if total is not None else torch.zeros(shape, dtype=dtype)


def _delta_into(adds: Sequence[Component], shape: tuple[int, ...], dtype: torch.dtype, fetch: Fetch,
                out: torch.Tensor) -> torch.Tensor:
    if not adds:
        return out.zero_()
    first, rest = adds[0], adds[1:]
    if first.mask_blob is None and first.scale == 1.0:
        codec = get_codec(first.codec)
        codec.decode_into(fetch(first.blob, transient=not codec.keeps_payload), out, dtype)
    else:
        out.copy_(first.decode(shape, dtype, fetch))
    if rest:  # summed in the stored dtype first, as delta() does, then converted once
        total = out if out.dtype == dtype else out.to(dtype)
        for comp in rest:
            total.add_(comp.decode(shape, dtype, fetch))
        if total is not out:
            out.copy_(total)
    return out


def _xor_delta(components: Sequence[Component], fetch: Fetch, base: BaseFetch | None,
               out: torch.Tensor | None) -> torch.Tensor:
    """``theta - base`` in the stored dtype; theta is rebuilt in ``out`` itself when it has that dtype (no copy)."""
    if base is None:
        raise TvstoreError("internal error: an xor component's tau needs the base tensor")
    b = base()
    if out is not None and out.dtype == b.dtype and out.is_contiguous():
        return rebuild(out.copy_(b), components, fetch, in_place=True).sub_(b)
    tau = rebuild(b, components, fetch).sub_(b)
    return tau if out is None else out.copy_(tau)


def rebuild(base: torch.Tensor, components: Sequence[Component], fetch: Fetch, in_place: bool = False) -> torch.Tensor:
    """theta = base + components, added one at a time in the base's dtype, then fixes and XORs applied.

    The order and dtype are fixed so that a rebuild is bit-identical on every
    run and machine. ``in_place`` reuses ``base`` as the output (the caller
    owns it and no longer needs it), saving a copy of the tensor.
    """
    out = base if in_place and base.is_contiguous() else base.clone(memory_format=torch.contiguous_format)
    shape, dtype = tuple(base.shape), base.dtype
    for comp in components:
        if comp.kind == ADD:
            out.add_(comp.decode(shape, dtype, fetch))
    for comp in components:
        if comp.kind == FIX:
            assert comp.mask_blob is not None, "a fix component always carries its mask"
            _apply_fix(out, _mask(fetch, comp.mask_blob, shape), comp, fetch)
    for comp in components:
        if comp.kind == XOR:
            _apply_xor(out, comp, fetch)
    return out


def _apply_xor(out: torch.Tensor, comp: Component, fetch: Fetch) -> None:
    """``out ^= x`` in place; a codec that can XORs its planes straight into ``out`` (no decoded copy)."""
    codec = get_codec(comp.codec)
    if hasattr(codec, "xor_into"):
        codec.xor_into(fetch(comp.blob, transient=True), out)
    else:
        out.view(int_view(out.dtype)).bitwise_xor_(comp.decode(tuple(out.shape), out.dtype, fetch))


def _mask(fetch: Fetch, digest: str, shape: tuple[int, ...]) -> torch.Tensor:
    """A mask component's boolean tensor (decoded into new memory: its bytes are only read)."""
    return decode_mask(fetch(digest, transient=True), shape)


def _apply_fix(out: torch.Tensor, where: torch.Tensor, fix: Component, fetch: Fetch) -> None:
    """Set the fixed entries of ``out`` in place (no new tensor, unlike ``torch.where``).

    A ``raw`` fix holds only the fixed entries, in order; older pushes stored a
    dense tensor (zeros elsewhere) in another exact codec.
    """
    mask = where.reshape(-1).numpy()
    if fix.codec["id"] == "raw":
        values = fix.decode((int(np.count_nonzero(mask)),), out.dtype, fetch)
        as_uint(out)[mask] = as_uint(values)
    else:
        np.copyto(as_uint(out), as_uint(fix.decode(tuple(out.shape), out.dtype, fetch)), where=mask)


def delta_of_encoded(encoded: Sequence[EncodedComponent], shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """What :func:`delta` will read back for components not yet stored (to measure their error)."""
    from tvstore.blobs.base import digest_bytes

    payloads: dict[str, bytes] = {}

    def keep(data: bytes) -> str:
        digest = digest_bytes(data)
        payloads[digest] = data
        return digest

    comps = [
        Component(e.codec, keep(e.payload), e.scale, keep(e.mask) if e.mask is not None else None, e.kind)
        for e in encoded
    ]
    return delta(comps, shape, dtype, mapping_fetch(payloads))


def mapping_fetch(payloads: Mapping[str, bytes]) -> Fetch:
    """A :class:`Fetch` over payloads held in memory, by digest."""
    def fetch(digest: str, *, transient: bool = False) -> bytes:
        return payloads[digest]

    return fetch
