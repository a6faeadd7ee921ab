"""The accuracy-vs-footprint plot: one curve per codec family, fp32 and published points marked."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: the harness runs on servers and in tests
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks.eval.settings import PUBLISHED_POINTS, PUBLISHED_SPANS  # noqa: E402


def family_curves(rows: list[dict[str, Any]]) -> dict[str, list[tuple[float, float, str]]]:
    """family -> [(bytes/param, avg accuracy, codec spec)] sorted by footprint."""
    curves: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for row in rows:
        curves[row["codec"].partition(":")[0]].append((row["bytes_per_param"], row["avg_accuracy"], row["codec"]))
    return {family: sorted(points) for family, points in curves.items()}


def plot_accuracy_vs_bytes(rows: list[dict[str, Any]], fp32_avg: float, path: Path, title: str) -> Path:
    """Average rebuilt accuracy over tasks vs stored bytes per parameter (log x)."""
    fig, ax = plt.subplots(figsize=(8, 5))
    for family, points in family_curves(rows).items():
        xs, ys, _ = zip(*points)
        ax.plot(xs, ys, marker="o", label=family)
    ax.scatter([4.0], [fp32_avg], marker="*", s=200, color="black", zorder=5, label="fp32 fine-tunes")
    ax.axhline(fp32_avg * 0.99, color="grey", linestyle=":", linewidth=1, label="99% of fp32")
    for i, (label, bits) in enumerate(PUBLISHED_POINTS):
        ax.axvline(bits / 8, color=f"C{7 + i % 3}", linestyle="--", linewidth=1, label=f"published: {label}")
    for label, low, high in PUBLISHED_SPANS:
        ax.axvspan(low / 8, high / 8, color="C9", alpha=0.12, label=f"published: {label}")
    ax.axvline(1 / 8, color="red", linestyle="-.", linewidth=1, label="target: 1 bit/param")
    ax.set_xscale("log")
    ax.set_xlabel("stored bytes per parameter (log)")
    ax.set_ylabel("average test accuracy over tasks")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
