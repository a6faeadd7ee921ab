"""Streaming materialisation of a merge, one tensor at a time.

``Merger`` binds a resolved recipe to tensor sources (the base, and one source
per recipe vector whose ``get`` returns that vector's tau) and computes any
single merged tensor in fp32: theta = base + method(taus, weights, params).
It is itself a ``TensorSource``, so merged models can be written by the
checkpoint writer or fed to another merge.

``materialize`` yields ``(name, theta)`` in order, computing a few tensors
ahead on a small thread pool (torch kernels release the GIL; each worker runs
torch single-threaded, see :mod:`tvstore.util.parallel`). Memory follows the
design's bound, (inputs + 2) x the largest tensor in fp32, whatever the number
of tensors: a tensor's work costs (its inputs + 2) x its size (its inputs'
taus stacked in one buffer the method reuses, the base and the result), and a
tensor starts only while everything in flight, the tensor the consumer holds
and the idle buffers kept for reuse fit that bound together. Small tensors
run side by side; the largest runs alone.

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
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future
from typing import Protocol, runtime_checkable

import torch

from tvstore.checkpoint.reader import TensorInfo
from tvstore.errors import TvstoreError, UsageError
from tvstore.merge.recipe import Recipe, ResolvedRecipe
from tvstore.util.parallel import each_row, tensor_pool
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
        self.spares = Spares()  # stacking buffers kept for reuse, see compute
        self._bound: int | None = None

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
        theta, left = self.compute(name, self.spares.take(self.stack_bytes(name)))
        if left is not None:
            self.spares.give(left, keep=self.bound_bytes())
        return theta

    def stack_bytes(self, name: str) -> int:
        """The fp32 buffer ``name``'s inputs are stacked in (0 when nothing is merged)."""
        if name in self._base_names and not _dtype_shape(self._base.info(name))[0].is_floating_point:
            return 0
        if name not in self._base_names and self.recipe.recipe.extra_tensors != "merge":
            return 0
        slots = self._slots_with(name, all_slots=name in self._base_names)
        return len(slots) * math.prod(self.info(name)[1]) * 4

    def own_bytes(self, name: str) -> int:
        """The base's and the result's fp32 copies of ``name``: its working memory beside the stack."""
        return 2 * math.prod(self.info(name)[1]) * 4

    def working_bytes(self, name: str) -> int:
        """The design's memory for computing ``name``: its stacked inputs, the base and the result, in fp32."""
        return self.stack_bytes(name) + self.own_bytes(name)

    def bound_bytes(self) -> int:
        """(inputs + 2) x the largest tensor, in fp32: the most a merge may hold at once."""
        if self._bound is None:
            self._bound = max((self.working_bytes(n) for n in self._names), default=0)
        return self._bound

    def compute(self, name: str, spare: torch.UntypedStorage | None = None, pool: Executor | None = None,
                ) -> tuple[torch.Tensor, torch.UntypedStorage | None]:
        """``get(name)``, stacking the inputs in ``spare`` if it is large enough, its rows on ``pool``.

        Returns theta and the stacking buffer when theta does not live in it,
        for the caller to reuse: fresh memory makes the kernel fault in and
        zero every page again, much of a task-arithmetic merge's system time.
        """
        if name not in self._base_names:
            return self._extra(name, spare, pool)
        out_dtype, shape = self.info(name)
        base_dtype, _ = _dtype_shape(self._base.info(name))
        if not base_dtype.is_floating_point:  # integer buffers (position ids...) are not merged
            return self._base.get(name), spare
        slots = self._slots_with(name, all_slots=True)
        theta, left = self._delta(name, shape, slots, spare, pool, self._base.get(name))
        return theta.to(out_dtype), left

    def _slots_with(self, name: str, *, all_slots: bool) -> list[int]:
        return [i for i, held in enumerate(self._held) if all_slots or name in held]

    def _delta(self, name: str, shape: tuple[int, ...], slots: list[int], spare: torch.UntypedStorage | None,
               pool: Executor | None = None, base: torch.Tensor | None = None,
               ) -> tuple[torch.Tensor, torch.UntypedStorage | None]:
        """The merged delta of ``slots``' taus in fp32, plus ``base`` (the base's tensor as stored) if given.

        Each input's row is decoded and prepared (trimmed, weighed) on its own,
        on ``pool``'s threads when given: the largest tensors run alone within
        the memory bound, and their rows keep every core busy. The base is read
        once and shared: sources that decode against it get it as stored, and
        the sum gets it in fp32, converted once the method is done.
        """
        plan = self.recipe.plan(name)
        taus = _stacked(len(slots), shape, spare)  # given to the method, which overwrites it
        weights = [plan.weights[i] for i in slots]
        params = {k: ([v[i] for i in slots] if isinstance(v, list) else v) for k, v in plan.params.items()}
        method = self.recipe.recipe.method

        def fill(row: int) -> None:
            self._tau(slots[row], name, shape, out=taus[row], base=base)
            if method.prepare is not None:
                method.prepare(taus[row], row, weights, params, name)

        each_row(fill, len(slots), pool)
        result = method.combine(taus, weights, params, name=name, base=base).to(torch.float32)
        stack = taus.untyped_storage()
        left = None if result.untyped_storage().data_ptr() == stack.data_ptr() else stack
        del taus
        if base is not None:
            result += base.to(torch.float32)
        return result, left

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

    def _extra(self, name: str, spare: torch.UntypedStorage | None = None, pool: Executor | None = None,
               ) -> tuple[torch.Tensor, torch.UntypedStorage | None]:
        """A tensor the base lacks: apply the recipe's ``extra_tensors`` policy."""
        recipe = self.recipe.recipe
        slots = self._slots_with(name, all_slots=False)
        holders = ", ".join(str(recipe.inputs[i].ref) for i in slots)
        out_dtype, shape = self.info(name)
        if isinstance(recipe.extra_tensors, Ref):
            return self._tau(self._from_slot(recipe.extra_tensors), name, shape).to(out_dtype), spare
        if recipe.extra_tensors == "refuse":
            raise UsageError(f"tensor {name!r} is not in the base (only in {holders}); method {recipe.method.name!r} "
                             "has no sensible merge for it: set extra_tensors to 'copy', 'merge', 'drop' or {from: REF}")
        if recipe.extra_tensors == "copy":
            if len(slots) != 1:
                raise UsageError(f"tensor {name!r} is not in the base and is in several inputs ({holders}); "
                                 "extra_tensors 'copy' needs exactly one: take one input's with {from: REF}, or 'drop'")
            return self._tau(slots[0], name, shape).to(out_dtype), spare
        theta, left = self._delta(name, shape, slots, spare, pool)
        return theta.to(out_dtype), left


def _dtype_shape(info: object) -> tuple[torch.dtype, tuple[int, ...]]:
    """Accept ``(dtype, shape)`` or anything with ``.dtype``/``.shape`` (e.g. a checkpoint's ``TensorInfo``)."""
    if hasattr(info, "dtype"):
        return info.dtype, tuple(info.shape)  # type: ignore[attr-defined]
    dtype, shape = info  # type: ignore[misc]
    return dtype, tuple(shape)


def _stacked(count: int, shape: tuple[int, ...], spare: torch.UntypedStorage | None) -> torch.Tensor:
    """An fp32 ``(count, *shape)`` buffer, in ``spare`` when it is large enough."""
    if spare is None or spare.nbytes() < count * math.prod(shape) * 4:
        return torch.empty((count, *shape), dtype=torch.float32)
    return torch.empty(0, dtype=torch.float32).set_(spare, 0, (count, *shape))


class Spares:
    """Idle stacking buffers of finished tensors, for the next ones to reuse (thread-safe)."""

    def __init__(self) -> None:
        self._idle: list[torch.UntypedStorage] = []
        self._lock = threading.Lock()

    def take(self, nbytes: int, at_most: int | None = None) -> torch.UntypedStorage | None:
        """The smallest idle buffer of at least ``nbytes`` (and at most ``at_most``), removed from the pool;
        ``None`` if none fits."""
        if nbytes <= 0:
            return None
        with self._lock:
            fits = [b for b in self._idle if nbytes <= b.nbytes() <= (at_most or b.nbytes())]
            if not fits:
                return None
            best = min(fits, key=lambda b: b.nbytes())
            self._idle.remove(best)
            return best

    def give(self, buffer: torch.UntypedStorage, keep: int) -> None:
        """Keep ``buffer`` for reuse, unless the idle buffers would then exceed ``keep`` bytes."""
        with self._lock:
            if self.idle_bytes() + buffer.nbytes() <= keep:
                self._idle.append(buffer)

    def idle_bytes(self) -> int:
        return sum(b.nbytes() for b in self._idle)

    def shrink(self, keep: int) -> None:
        """Drop idle buffers, largest first, until they hold at most ``keep`` bytes."""
        with self._lock:
            self._idle.sort(key=lambda b: b.nbytes())
            while self._idle and self.idle_bytes() > keep:
                self._idle.pop()


def materialize(merger: Merger, *, workers: int = 2, lookahead: int = 1) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(name, theta)`` in order, up to ``workers + lookahead`` tensors ahead, within the memory bound."""
    names = merger.names()
    if workers <= 1:
        for name in names:
            yield name, merger.get(name)
        return
    with tensor_pool(workers, "tvstore-merge") as pool:
        flight = _Flight(merger, pool, workers + max(0, lookahead))
        try:
            for name in names:
                while not flight.start(name):
                    yield flight.oldest()
                    flight.release()
            while flight.pending:
                yield flight.oldest()
                flight.release()
        finally:  # a consumer that stops early must not leave work running
            flight.cancel()


class _Flight:
    """The tensors of a merge being computed, admitted in order within :meth:`Merger.bound_bytes`.

    A tensor starts only while the tensors in flight, the one the consumer
    holds, its own work and the idle spare buffers fit the bound; idle spares
    are dropped before work waits for them, and a tensor always starts when
    nothing else is in flight.
    """

    def __init__(self, merger: Merger, pool: Executor, window: int) -> None:
        self.merger, self.pool, self.window = merger, pool, window
        self.limit = merger.bound_bytes()
        self.pending: deque[tuple[str, Future, int]] = deque()
        self.used = 0  # the work in flight and the tensor the consumer holds, as the design counts them
        self._held: tuple[int, torch.UntypedStorage | None] = (0, None)

    def start(self, name: str) -> bool:
        """Submit ``name`` if it fits beside the work in flight; ``False`` (nothing started) if it must wait."""
        spares, stack = self.merger.spares, self.merger.stack_bytes(name)
        # a buffer much larger than the need would count in full: the largest tensor's, taken by each small
        # tensor in turn, kept every other tensor from running beside it
        spare = spares.take(stack, at_most=2 * stack)
        cost = self.merger.own_bytes(name) + (spare.nbytes() if spare is not None else stack)
        spares.shrink(max(0, self.limit - self.used - cost))
        fits = len(self.pending) < self.window and self.used + cost + spares.idle_bytes() <= self.limit
        if self.pending and not fits:
            if spare is not None:
                spares.give(spare, keep=self.limit)
            return False
        self.pending.append((name, self.pool.submit(self.merger.compute, name, spare, self.pool), cost))
        self.used += cost
        return True

    def oldest(self) -> tuple[str, torch.Tensor]:
        """The earliest tensor, once computed; it stays counted until :meth:`release`."""
        name, fut, cost = self.pending.popleft()
        theta, left = fut.result()
        self._held = (cost, left)
        return name, theta

    def release(self) -> None:
        """The consumer is done with the tensor :meth:`oldest` gave: its memory is free, its buffer a spare."""
        cost, left = self._held
        self._held = (0, None)
        self.used -= cost
        if left is not None:
            self.merger.spares.give(left, keep=self.limit)

    def cancel(self) -> None:
        for _, fut, _ in self.pending:
            fut.cancel()


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
