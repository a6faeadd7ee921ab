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
    """family -> [(bits/param, avg accuracy, codec spec)] sorted by footprint (``aggregate.individual`` rows)."""
    curves: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for row in rows:
        point = (row["bits_per_param"], row["average"]["accuracy"]["value"], row["codec"])
        curves[row["codec"].partition(":")[0]].append(point)
    return {family: sorted(points) for family, points in curves.items()}


def plot_accuracy_vs_bytes(summaries: dict[str, dict[str, Any]], path: Path, title: str) -> Path:
    """Average rebuilt accuracy over tasks (mean over seeds) vs stored bits per parameter (log x), one panel per base."""
    fig, axes = plt.subplots(1, max(1, len(summaries)), figsize=(8 * max(1, len(summaries)), 5), squeeze=False)
    for ax, (base, summary) in zip(axes[0], summaries.items()):
        fp32_avg = sum(t["fp32"] for t in summary["fp32"].values()) / len(summary["fp32"])
        for family, points in family_curves(summary["individual"]).items():
            xs, ys, _ = zip(*points)
            ax.plot(xs, ys, marker="o", label=family)
        ax.scatter([32.0], [fp32_avg], marker="*", s=200, color="black", zorder=5, label="fp32 fine-tunes")
        ax.axhline(fp32_avg * 0.99, color="grey", linestyle=":", linewidth=1, label="99% of fp32")
        for i, (label, bits) in enumerate(PUBLISHED_POINTS):
            ax.axvline(bits, color=f"C{7 + i % 3}", linestyle="--", linewidth=1, label=f"published: {label}")
        for label, low, high in PUBLISHED_SPANS:
            ax.axvspan(low, high, color="C9", alpha=0.12, label=f"published: {label}")
        ax.axvline(0.5, color="red", linestyle="-.", linewidth=1, label="target: 0.5 bit/param")
        ax.set_xscale("log")
        ax.set_xlabel("stored bits per parameter per task (log)")
        ax.set_ylabel("average test accuracy over tasks")
        ax.set_title(f"{base}: {title}", fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
