"""Per-input sparsification of one task-vector tensor (the "trim"/"drop" step).

These mirror ``mergekit.sparsify`` operation for operation, so deterministic
methods (magnitude, outliers) give bit-identical masks, and the random ones
(DARE's Bernoulli drop, DELLA's rank-based drop) draw from an explicit
``torch.Generator`` instead of the global RNG: the registry seeds it from the
recipe seed, the tensor name and the input index, which makes a merge
reproducible and independent of the order in which threads reach tensors.

Rescaling follows mergekit: ``rescale=True`` (or ``"l1"``) rescales the kept
entries so the tensor's L1 norm is unchanged; ``"l2"``/``"linf"`` match those
norms; ``"inverse"`` is the DARE paper's exact 1/keep-probability factor. The
L1 rescale equals 1/density in expectation.
"""

from __future__ import annotations

import hashlib

import torch

RESCALE_CHOICES = ("l1", "l2", "linf", "inverse")


def rescale_norm(value: bool | str) -> str | None:
    """Map a recipe's ``rescale`` value onto a norm name (or ``None`` for no rescale)."""
    if value is True:
        return "l1"
    if value is False or value is None:
        return None
    return str(value)


def tensor_generator(seed: int, name: str, index: int) -> torch.Generator:
    """A generator private to (seed, tensor, input): stable across runs and thread orders."""
    digest = hashlib.blake2b(f"{seed}\0{name}\0{index}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)


def rescaled(tensor: torch.Tensor, mask: torch.Tensor, norm: str | None, keep_prob: torch.Tensor | float | None = None,
             eps: float = 1e-7, *, inplace: bool = False) -> torch.Tensor:
    """Apply ``mask``; then restore the chosen norm of ``tensor`` (mergekit's rule).

    ``inplace`` overwrites ``tensor`` (a merge's own fp32 buffer) with the same
    values ``tensor * mask`` would give, sparing a copy of the tensor.
    """
    if norm is not None and norm not in RESCALE_CHOICES:
        raise ValueError(f"unknown rescale norm {norm!r}")
    before = None if norm in (None, "inverse") else _norm(tensor, norm)
    masked = tensor.mul_(mask) if inplace else tensor * mask
    if norm is None or (norm == "inverse" and keep_prob is None):
        return masked
    if norm == "inverse":
        return masked.div_(keep_prob) if inplace else masked / keep_prob
    after = _norm(masked, norm)
    if before < eps or after < eps:
        return masked
    return masked.mul_(before / after) if inplace else masked * (before / after)


def _norm(tensor: torch.Tensor, norm: str) -> torch.Tensor:
    if norm == "l1":
        return tensor.abs().sum()
    if norm == "l2":
        return tensor.norm()
    return tensor.abs().max()


def largest(tensor: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of the ``k`` largest-magnitude entries, exactly those mergekit's sort picks.

    mergekit takes ``argsort(|tensor|, descending=True)[:k]``: O(n log n) time
    and four tensors' worth of memory. The k-th largest magnitude (a partial
    sort of one copy, in place, O(n)) picks the same entries whenever exactly
    ``k`` reach it. Only a tie at that threshold leaves the choice to the
    sort's own order, and then the sort decides. Quantized taus, whose few
    levels make such a tie near certain (and the partial sort slow), go to the
    sort at once: a sample of their magnitudes repeats itself.
    """
    n = tensor.numel()
    magnitudes = tensor.abs().reshape(-1).float()
    if _distinct(magnitudes) and torch.isfinite(magnitudes.sum()):  # NaN and inf order differently in numpy
        values = magnitudes.numpy()
        values.partition(n - k)
        threshold = float(values[n - k])
        del values, magnitudes
        keep = (tensor >= threshold) | (tensor <= -threshold)
        if int(keep.sum()) == k:
            return keep
        magnitudes = tensor.abs().reshape(-1).float()  # again: the partial sort reordered the copy in place
    keep = torch.zeros(n, dtype=torch.bool)
    keep[torch.argsort(magnitudes, descending=True)[:k]] = True
    return keep.reshape_as(tensor)


def _distinct(magnitudes: torch.Tensor, sample: int = 1024) -> bool:
    """Whether an evenly spaced sample of ``magnitudes`` is mostly distinct values (not a few levels)."""
    picked = magnitudes[:: max(1, magnitudes.numel() // sample)][:sample]
    return torch.unique(picked).numel() >= 0.9 * picked.numel()


def magnitude(tensor: torch.Tensor, density: float, norm: str | None = None, *, inplace: bool = False) -> torch.Tensor:
    """Keep the ``density`` fraction of largest-magnitude entries (at least one); ``inplace`` overwrites ``tensor``."""
    if density >= 1:
        return tensor
    if density <= 0 or tensor.numel() == 0:
        return tensor.zero_() if inplace else torch.zeros_like(tensor)
    k = max(1, int(density * tensor.numel()))
    return rescaled(tensor, largest(tensor, k), norm, keep_prob=density, inplace=inplace)


def magnitude_outliers(tensor: torch.Tensor, density: float, gamma: float, norm: str | None = None) -> torch.Tensor:
    """Breadcrumbs: drop the top ``gamma`` outliers and the smallest, keeping ``density``."""
    if density >= 1:
        return tensor
    n = tensor.numel()
    target = int(density * n)
    n_top = int(gamma * n)
    n_bot = max(0, n - target - n_top)  # outlier removal shrinks if density demands it
    order = torch.sort(tensor.abs().reshape(-1).float(), descending=False).indices
    mask = torch.zeros(n, dtype=tensor.dtype)
    mask[order[n_bot : n_bot + target]] = 1
    return rescaled(tensor, mask.reshape_as(tensor), norm, keep_prob=density)


def bernoulli(tensor: torch.Tensor, density: float, norm: str | None, gen: torch.Generator) -> torch.Tensor:
    """DARE: keep each entry with probability ``density`` (= 1 - p)."""
    if density >= 1:
        return tensor
    probs = torch.full_like(tensor, density, dtype=torch.float32)
    mask = torch.bernoulli(probs, generator=gen)
    return rescaled(tensor.float(), mask, norm, keep_prob=density).to(tensor.dtype)


def della_magprune(tensor: torch.Tensor, density: float, epsilon: float, norm: str | None,
                   gen: torch.Generator) -> torch.Tensor:
    """DELLA: keep probability rises linearly with magnitude rank, in density +- epsilon per row."""
    if density >= 1:
        return tensor
    if density <= 0:
        return torch.zeros_like(tensor)
    if density + epsilon >= 1 or density - epsilon <= 0:
        raise ValueError("epsilon must keep density +- epsilon inside (0, 1)")
    shape = tensor.shape
    work = tensor.float()
    if work.dim() < 2:
        work = work.unsqueeze(0)
    ranks = torch.argsort(work.abs(), dim=1, descending=False).argsort(dim=1).float() + 1
    lo, hi = ranks.min(dim=1, keepdim=True).values, ranks.max(dim=1, keepdim=True).values
    rank_norm = ((ranks - lo) / (hi - lo)).clamp(0, 1)
    probs = (density - epsilon) + rank_norm * 2 * epsilon
    mask = torch.bernoulli(probs, generator=gen)
    return rescaled(work, mask, norm, keep_prob=probs).to(tensor.dtype).reshape(shape)
