"""Streaming materialisation of a merge, one tensor at a time.

``Merger`` binds a resolved recipe to tensor sources (the base, and one source
per recipe vector whose ``get`` returns that vector's tau) and computes any
single merged tensor in fp32: theta = base + method(taus, weights, params).
It is itself a ``TensorSource``, so merged models can be written by the
checkpoint writer or fed to another merge.

``materialize`` yields ``(name, theta)`` in order, computing a few tensors
ahead on a small thread pool (torch kernels release the GIL; each worker runs
torch single-threaded, see :mod:`tvstore.util.parallel`). At most
``workers + lookahead`` tensors are in flight; each decodes its inputs' taus
straight into one stacked fp32 buffer that the method reuses, plus the base,
a sign mask and the result, so peak memory is about (inputs + 3) x largest
tensor (fp32) x in-flight count, whatever the number of tensors.

Tensors the base lacks but inputs have (a new classification head, say) follow
the recipe's ``extra_tensors`` policy: ``merge`` treats the base as zeros and
merges the inputs that have the tensor (task arithmetic: weight x tensor, the
verbatim tensor at weight 1); ``copy`` takes the tensor verbatim from the one
input that has it; ``drop`` leaves every such tensor out of the output (a
shared encoder, each task keeping its own head elsewhere); a ``Ref`` takes
them verbatim from that one input and leaves the other inputs' out (one
task's head on the merged encoder); ``refuse`` (the default for methods that
trim or elect signs, where zero-based trimming of a head is meaningless)
raises. For such a tensor an input source's ``get`` returns the fine-tune's
own tensor (its delta against zeros). An input lacking a base tensor
contributes a zero tau.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing
from typing import Protocol, runtime_checkable

import torch

from tvstore.checkpoint.reader import TensorInfo
from tvstore.errors import TvstoreError, UsageError
from tvstore.util.parallel import ordered_map
from tvstore.merge.recipe import Recipe, ResolvedRecipe
from tvstore.util.refs import Ref


@runtime_checkable
class TensorSource(Protocol):
    """Named tensors, read one at a time."""

    def names(self) -> list[str]: ...

    def info(self, name: str) -> tuple[torch.dtype, tuple[int, ...]]:
        """``(dtype, shape)``; an object with ``.dtype`` and ``.shape`` is accepted too."""
        ...

    def get(self, name: str) -> torch.Tensor: ...


class Merger:
    """A merge bound to its sources; ``get(name)`` computes one merged tensor."""

    def __init__(self, recipe: Recipe | ResolvedRecipe, base: TensorSource, inputs: Sequence[TensorSource],
                 dtype: torch.dtype | None = None) -> None:
        resolved = recipe if isinstance(recipe, ResolvedRecipe) else recipe.resolve(base.names())
        self.recipe = resolved
        vectors = resolved.recipe.vectors
        if len(inputs) != len(vectors):
            raise UsageError(f"merge needs {len(vectors)} input sources (one per vector), got {len(inputs)}")
        self._base = base
        self._base_names = set(base.names())
        # recipe input slot -> source (None for the base-as-input entry: a zero tau)
        it = iter(inputs)
        self._slots: list[TensorSource | None] = [None if i.is_base else next(it) for i in resolved.recipe.inputs]
        self._held = [set(s.names()) if s is not None else set() for s in self._slots]
        self._dtype = dtype or resolved.recipe.dtype
        self._kept = self._extra_slots()
        self._names = self._order(base.names())
        self._spare = threading.local()  # see _inputs_buffer

    def _extra_slots(self) -> list[int]:
        """The inputs whose tensors the base lacks reach the output (none for ``drop``, one for a ``Ref``)."""
        policy = self.recipe.recipe.extra_tensors
        if policy == "drop":
            return []
        if isinstance(policy, Ref):
            return [self._from_slot(policy)]
        return list(range(len(self._slots)))

    def _from_slot(self, ref: Ref) -> int:
        inputs = self.recipe.recipe.inputs
        for i, inp in enumerate(inputs):
            if inp.ref == ref and not inp.is_base:
                return i
        names = ", ".join(str(i.ref) for i in inputs if not i.is_base)
        raise UsageError(f"extra_tensors from {ref}: not an input of the merge (inputs: {names})")

    def _order(self, base_names: list[str]) -> list[str]:
        """Base order, then tensors only inputs have (those the policy keeps), in input order."""
        names = list(base_names)
        seen = set(names)
        for i in self._kept:
            src = self._slots[i]
            for n in src.names() if src is not None else ():
                if n not in seen:
                    seen.add(n)
                    names.append(n)
        return names

    def names(self) -> list[str]:
        return list(self._names)

    def info(self, name: str) -> tuple[torch.dtype, tuple[int, ...]]:
        if name in self._base_names:
            dtype, shape = _dtype_shape(self._base.info(name))
        else:
            dtype, shape = _dtype_shape(self._holder(name).info(name))
        return (self._dtype or dtype), tuple(shape)

    def infos(self) -> list[TensorInfo]:
        """Output dtype and shape of every tensor, in order: what a checkpoint writer needs up front."""
        return [TensorInfo(n, *self.info(n)) for n in self._names]

    def _holder(self, name: str) -> TensorSource:
        """The first input whose copy of a tensor the base lacks reaches the output (it fixes the shape)."""
        for i in self._kept:
            if name in self._held[i]:
                return self._slots[i]  # type: ignore[return-value]
        raise KeyError(name)

    def get(self, name: str) -> torch.Tensor:
        """theta[name] = base + merged delta, computed in fp32, cast to the output dtype."""
        if name not in self._base_names:
            return self._extra(name)
        out_dtype, shape = self.info(name)
        base_dtype, _ = _dtype_shape(self._base.info(name))
        if not base_dtype.is_floating_point:  # integer buffers (position ids...) are not merged
            return self._base.get(name)
        theta = self._delta(name, shape, self._slots_with(name, all_slots=True), base=self._base.get(name))
        return theta.to(out_dtype)

    def _slots_with(self, name: str, *, all_slots: bool) -> list[int]:
        return [i for i, held in enumerate(self._held) if all_slots or name in held]

    def _delta(self, name: str, shape: tuple[int, ...], slots: list[int],
               base: torch.Tensor | None = None) -> torch.Tensor:
        """The merged delta of ``slots``' taus in fp32, plus ``base`` (the base's tensor as stored) if given.

        The base is read once and shared: sources that decode against it get it
        as stored, the method (some weigh by it) and the sum get it in fp32.
        """
        plan = self.recipe.plan(name)
        base32 = None if base is None else base.to(torch.float32)
        taus = self._inputs_buffer(len(slots), shape)  # given to the method, which may reuse it
        for row, i in enumerate(slots):
            self._tau(i, name, shape, out=taus[row], base=base)
        weights = [plan.weights[i] for i in slots]
        params = {k: ([v[i] for i in slots] if isinstance(v, list) else v) for k, v in plan.params.items()}
        fn = self.recipe.recipe.method.fn
        result = fn(taus, weights, params, name=name, base=base32).to(torch.float32)
        if result.untyped_storage().data_ptr() != taus.untyped_storage().data_ptr():
            self._spare.buffer = taus.untyped_storage()  # the result does not live in it: the next tensor's
        if base32 is not None:
            result += base32
        return result

    def _inputs_buffer(self, count: int, shape: tuple[int, ...]) -> torch.Tensor:
        """An fp32 ``(count, *shape)`` buffer, in this thread's spare memory when it is large enough.

        A merge fills one such buffer per tensor; taking fresh memory each time
        made the kernel fault in and zero every page of it again, much of a
        task-arithmetic merge's system time. The spare is per thread (each worker
        computes its own tensors) and per merger (it goes when the merge does).
        """
        numel = count * math.prod(shape)
        spare = getattr(self._spare, "buffer", None)
        self._spare.buffer = None  # taken: given back only if the result does not live in it
        if spare is None or spare.nbytes() < numel * 4:
            return torch.empty((count, *shape), dtype=torch.float32)
        return torch.empty(0, dtype=torch.float32).set_(spare, 0, (count, *shape))

    def _tau(self, slot: int, name: str, shape: tuple[int, ...], out: torch.Tensor | None = None,
             base: torch.Tensor | None = None) -> torch.Tensor:
        """Input ``slot``'s tau for ``name`` in fp32 (zeros if it lacks the tensor), into ``out`` if given.

        ``base``: the base's tensor as stored, handed to a source that can use it (``get_into``).
        """
        out = torch.empty(shape, dtype=torch.float32) if out is None else out
        src = self._slots[slot]
        if src is None or name not in self._held[slot]:
            return out.zero_()
        get_into = getattr(src, "get_into", None)
        info = src.info(name)
        stored = tuple(info.shape) if hasattr(info, "shape") else tuple(info[1])
        if get_into is not None and stored == tuple(shape):  # decode straight into the method's buffer
            return get_into(name, out, base)
        tau = src.get(name)
        if tuple(tau.shape) != tuple(shape):
            ref = self.recipe.recipe.inputs[slot].ref
            other = "base has" if name in self._base_names else "the first input that has it has"
            raise TvstoreError(f"input {ref}: tensor {name!r} has shape {tuple(tau.shape)}, {other} {tuple(shape)}")
        return out.copy_(tau)

    def _extra(self, name: str) -> torch.Tensor:
        """A tensor the base lacks: apply the recipe's ``extra_tensors`` policy."""
        recipe = self.recipe.recipe
        slots = self._slots_with(name, all_slots=False)
        holders = ", ".join(str(recipe.inputs[i].ref) for i in slots)
        out_dtype, shape = self.info(name)
        if isinstance(recipe.extra_tensors, Ref):
            return self._tau(self._from_slot(recipe.extra_tensors), name, shape).to(out_dtype)
        if recipe.extra_tensors == "refuse":
            raise UsageError(f"tensor {name!r} is not in the base (only in {holders}); method {recipe.method.name!r} "
                             "has no sensible merge for it: set extra_tensors to 'copy', 'merge', 'drop' or {from: REF}")
        if recipe.extra_tensors == "copy":
            if len(slots) != 1:
                raise UsageError(f"tensor {name!r} is not in the base and is in several inputs ({holders}); "
                                 "extra_tensors 'copy' needs exactly one: take one input's with {from: REF}, or 'drop'")
            return self._tau(slots[0], name, shape).to(out_dtype)
        return self._delta(name, shape, slots).to(out_dtype)


def _dtype_shape(info: object) -> tuple[torch.dtype, tuple[int, ...]]:
    """Accept ``(dtype, shape)`` or anything with ``.dtype``/``.shape`` (e.g. a checkpoint's ``TensorInfo``)."""
    if hasattr(info, "dtype"):
        return info.dtype, tuple(info.shape)  # type: ignore[attr-defined]
    dtype, shape = info  # type: ignore[misc]
    return dtype, tuple(shape)


def materialize(merger: Merger, *, workers: int = 2, lookahead: int = 1) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(name, theta)`` in order, computing up to ``workers + lookahead`` tensors ahead."""
    names = merger.names()
    tensors = ordered_map(merger.get, names, max(1, workers), workers + max(0, lookahead), "tvstore-merge")
    with closing(tensors):  # a consumer that stops early must not leave work running
        yield from zip(names, tensors)


class LazyMerged(Mapping[str, torch.Tensor]):
    """A merged model as a read-only mapping: each tensor is computed when accessed, never cached.

    ``model.load_state_dict(LazyMerged(...), strict=False)`` works without
    materialising more than one tensor at a time beyond what the model holds.
    """

    def __init__(self, merger: Merger) -> None:
        self._merger = merger
        self._names = merger.names()
        self._set = set(self._names)

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._set:
            raise KeyError(name)
        return self._merger.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._set

    def info(self, name: str) -> tuple[torch.dtype, tuple[int, ...]]:
        return self._merger.info(name)
