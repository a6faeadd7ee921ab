"""What a codec cost: reconstruction error of one tensor, accumulated per vector.

Errors are accumulated as sums of squares and dot products so the
vector-wide numbers are exact aggregates of the per-tensor ones, not averages
of ratios.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class ErrorStats:
    """Sufficient statistics for relative L2 error and cosine similarity."""

    ref_sq: float = 0.0  # ||x||^2
    rec_sq: float = 0.0  # ||x_hat||^2
    err_sq: float = 0.0  # ||x - x_hat||^2
    dot: float = 0.0  # <x, x_hat>

    @classmethod
    def of(cls, exact: torch.Tensor, approx: torch.Tensor) -> ErrorStats:
        """Products in the tensors' own precision, sums accumulated in float64.

        An exact reconstruction (``approx is exact``) costs one pass, not four.
        """
        x = exact.detach().reshape(-1)
        if approx is exact:
            sq = _sum_of(x, x)
            return cls(sq, sq, 0.0, sq)
        y = approx.detach().reshape(-1)
        if not x.is_floating_point() or x.dtype != y.dtype or x.element_size() < 4:
            x, y = x.float(), y.float()  # half precision products would round too coarsely
        return cls(_sum_of(x, x), _sum_of(y, y), _sum_of(x - y, x - y), _sum_of(x, y))

    def __iadd__(self, other: ErrorStats) -> ErrorStats:
        self.ref_sq += other.ref_sq
        self.rec_sq += other.rec_sq
        self.err_sq += other.err_sq
        self.dot += other.dot
        return self

    @property
    def rel_l2(self) -> float:
        """||x - x_hat|| / ||x||; 0 when both are zero, inf when only x is."""
        if self.ref_sq == 0.0:
            return 0.0 if self.err_sq == 0.0 else math.inf
        return math.sqrt(self.err_sq / self.ref_sq)

    @property
    def cosine(self) -> float:
        """cos(x, x_hat); 1 when both are zero, 0 when exactly one is."""
        if self.ref_sq == 0.0 and self.rec_sq == 0.0:
            return 1.0
        if self.ref_sq == 0.0 or self.rec_sq == 0.0:
            return 0.0
        return self.dot / math.sqrt(self.ref_sq * self.rec_sq)


def _sum_of(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.element_size() < 4 or not a.is_floating_point():
        a, b = a.float(), b.float()
    return float(torch.sum(a * b, dtype=torch.float64))


def rel_l2(exact: torch.Tensor, approx: torch.Tensor) -> float:
    return ErrorStats.of(exact, approx).rel_l2


def cosine(exact: torch.Tensor, approx: torch.Tensor) -> float:
    return ErrorStats.of(exact, approx).cosine
