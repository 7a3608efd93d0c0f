"""PNG plots for the report: learning curves with seed bands, and final metric with error bars.

The functions take plain summarised numbers (computed in report/tables.py) and only draw. matplotlib is imported
inside them with the Agg backend, so they work on machines without a display and cost nothing until called.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence


@dataclass
class Curve:
    """One method's learning curve: per-epoch mean and std over seeds."""

    label: str  # method label shown in the legend
    weights: str  # "average" (the weights a method reports) or "online" (the trained model's)
    epochs: list[float]  # x values
    mean: list[float]  # mean over seeds at each epoch
    std: list[float]  # std over seeds at each epoch (NaN where only one seed: no band)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)  # file output only; never opens a window
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, ax, path: Path, xlabel: str, ylabel: str, title: str, title_size: int = 10) -> Path:
    """Label the axes, grid, legend, tight layout, write `path` (its folder made), close the figure."""
    plt = _pyplot()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=title_size)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_learning_curves(curves: Sequence[Curve], metric: str, title: str, path: Path) -> Path:
    """Averaged weights as solid lines, online weights dashed in the same colour; bands are mean +- std."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours: dict[str, str] = {}
    for curve in curves:
        colour = colours.setdefault(curve.label, f"C{len(colours) % 10}")
        style = "-" if curve.weights == "average" else "--"
        name = curve.label if curve.weights == "average" else f"{curve.label} (online)"
        ax.plot(curve.epochs, curve.mean, style, color=colour, label=name, marker="o", markersize=3)
        low = [m - (0.0 if math.isnan(s) else s) for m, s in zip(curve.mean, curve.std, strict=True)]
        high = [m + (0.0 if math.isnan(s) else s) for m, s in zip(curve.mean, curve.std, strict=True)]
        ax.fill_between(
            curve.epochs, low, high, color=colour, alpha=0.15 if curve.weights == "average" else 0.07
        )
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return save_figure(fig, ax, path, "epoch", metric, title)


def plot_final(
    labels: Sequence[str], means: Sequence[float], stds: Sequence[float], metric: str, title: str, path: Path
) -> Path:
    """Final headline value per method: a dot at the mean with a +-std error bar (no bar where n < 2)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(labels) + 2), 4))
    xs = list(range(len(labels)))
    errors = [0.0 if math.isnan(s) else s for s in stds]
    ax.errorbar(xs, means, yerr=errors, fmt="o", capsize=6, color="C0")
    ax.set_xticks(xs, labels, rotation=20, ha="right")
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
