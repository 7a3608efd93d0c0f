"""Loss along lines and planes in weight space, and their PNG plots.

* `interpolation_curve`: L((1 - a) * A + a * B) for weight sets A and B (state dicts), a in a range that usually
  overshoots [0, 1] a little. Every floating-point entry of the state dict is interpolated, BatchNorm running
  statistics included (they are buffers, so this is the only consistent choice short of recomputing them); integer
  entries (num_batches_tracked) are taken from A.
* `filter_normalized_direction` + `landscape_1d` / `landscape_2d`: Li et al. 2018, "Visualizing the Loss Landscape
  of Neural Nets". A Gaussian direction d is rescaled filter by filter (slices along dim 0 of every weight with two or
  more dimensions: conv output channels, linear output rows) to the norm of the same filter of the weights, so the
  plot does not depend on the scale of each layer. Like the paper's "ignore biasbn" choice, directions of
  one-dimensional parameters (biases, BatchNorm/LayerNorm scale and shift) are zero: those parameters stay fixed.
  Buffers (BatchNorm running statistics) are not perturbed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from benchmarks.analysis.hessian import Batch, LossFn, Vector, mean_loss, trainable_params

StateDict = dict[str, torch.Tensor]
MetricFn = Callable[[nn.Module], float]  # (model) -> one number, e.g. the task's headline metric


def interpolate_states(start: StateDict, end: StateDict, alpha: float) -> StateDict:
    """(1 - alpha) * start + alpha * end for floating-point entries; other entries from `start`."""
    if start.keys() != end.keys():
        missing = sorted(set(start) ^ set(end))
        raise ValueError(f"the two state dicts hold different keys (first differing: {missing[:5]})")
    mixed = {}
    for key, a in start.items():
        b = end[key]
        if a.shape != b.shape:
            raise ValueError(f"state dict entry {key!r} has shape {tuple(a.shape)} vs {tuple(b.shape)}")
        mixed[key] = torch.lerp(a, b.to(a), alpha) if a.is_floating_point() else a.clone()
    return mixed


def interpolation_curve(
    model: nn.Module,
    module: nn.Module,
    loss_fn: LossFn,
    batches: Sequence[Batch],
    start: StateDict,
    end: StateDict,
    alphas: Sequence[float],
    metric_fn: Optional[MetricFn] = None,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Loss (and optionally a metric) of `model` with `module`'s weights set to each interpolated state.

    `module` is the part of `model` the states belong to (the averaged module, or the model itself). Its weights
    are restored afterwards.
    """
    saved = {k: v.detach().clone() for k, v in module.state_dict().items()}
    curve: dict[str, list[float]] = {"alpha": [float(a) for a in alphas], "loss": []}
    if metric_fn is not None:
        curve["metric"] = []
    try:
        for alpha in alphas:
            module.load_state_dict(interpolate_states(start, end, float(alpha)))
            curve["loss"].append(mean_loss(model, loss_fn, batches, seed=seed))
            if metric_fn is not None:
                curve["metric"].append(float(metric_fn(model)))
    finally:
        module.load_state_dict(saved)
    return curve


def filter_normalized_direction(params: Sequence[torch.Tensor], seed: int) -> Vector:
    """A seeded Gaussian direction, rescaled filter-wise to the weights' filter norms; zero on 1-D parameters."""
    generator = torch.Generator().manual_seed(seed)
    direction = []
    for p in params:
        raw = torch.randn(p.shape, generator=generator).to(p)  # drawn for every p, so seeds line up across weights
        if p.dim() <= 1:
            direction.append(torch.zeros_like(p))
            continue
        weight_norms = p.detach().flatten(1).norm(dim=1)
        raw_norms = raw.flatten(1).norm(dim=1).clamp_min(1e-12)
        shape = (-1,) + (1,) * (p.dim() - 1)
        direction.append(raw * (weight_norms / raw_norms).view(shape))
    return direction


def _loss_at(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Sequence[Batch],
    params: Sequence[torch.Tensor],
    origin: Vector,
    offset: Vector,
    seed: int,
) -> float:
    with torch.no_grad():
        for p, w, d in zip(params, origin, offset):
            p.copy_(w + d)
    return mean_loss(model, loss_fn, batches, seed=seed)


def landscape_1d(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Sequence[Batch],
    direction: Vector,
    coords: Sequence[float],
    params: Optional[Sequence[torch.Tensor]] = None,
    seed: int = 0,
) -> dict[str, list[float]]:
    """L(w + t * direction) for t in coords; the weights are restored afterwards."""
    params = list(params) if params is not None else trainable_params(model)
    origin = [p.detach().clone() for p in params]
    losses = []
    try:
        for t in coords:
            offset = [d * float(t) for d in direction]
            losses.append(_loss_at(model, loss_fn, batches, params, origin, offset, seed))
    finally:
        with torch.no_grad():
            for p, w in zip(params, origin):
                p.copy_(w)
    return {"coord": [float(t) for t in coords], "loss": losses}


def landscape_2d(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Sequence[Batch],
    direction_x: Vector,
    direction_y: Vector,
    coords: Sequence[float],
    params: Optional[Sequence[torch.Tensor]] = None,
    seed: int = 0,
) -> dict[str, list]:
    """L(w + x * dx + y * dy) on the grid coords x coords; loss[i][j] is at (x = coords[j], y = coords[i])."""
    params = list(params) if params is not None else trainable_params(model)
    origin = [p.detach().clone() for p in params]
    grid = []
    try:
        for y in coords:
            row = []
            for x in coords:
                offset = [dx * float(x) + dy * float(y) for dx, dy in zip(direction_x, direction_y)]
                row.append(_loss_at(model, loss_fn, batches, params, origin, offset, seed))
            grid.append(row)
    finally:
        with torch.no_grad():
            for p, w in zip(params, origin):
                p.copy_(w)
    return {"coord": [float(t) for t in coords], "loss": grid}


def plot_curves(
    path: Path, curves: dict[str, tuple[Sequence[float], Sequence[float]]], xlabel: str, ylabel: str, title: str
) -> Path:
    """One line per label; the file is written with the Agg backend (no display needed)."""
    from benchmarks.plots import _pyplot, save_figure

    fig, ax = _pyplot().subplots(figsize=(5, 3.5))
    for label, (xs, ys) in curves.items():
        ax.plot(xs, ys, marker="o", markersize=3, label=label)
    return save_figure(fig, ax, path, xlabel, ylabel, title, title_size=9)


def plot_surface(path: Path, coords: Sequence[float], loss: Sequence[Sequence[float]], title: str) -> Path:
    """Contour plot of a 2-D landscape; the log of the loss when it is positive everywhere (basins read better)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    values = np.asarray(loss, dtype=float)
    finite = np.isfinite(values)
    if not finite.any():
        raise ValueError("the landscape holds no finite loss value; nothing to plot")
    values = np.where(finite, values, values[finite].max())  # diverged points (inf/nan) drawn at the top level
    label = "loss"
    if values.min() > 0:
        values, label = np.log10(values), "log10 loss"
    fig, ax = plt.subplots(figsize=(4.5, 4))
    contour = ax.contourf(coords, coords, values, levels=20, cmap="viridis")
    ax.contour(coords, coords, values, levels=20, colors="k", linewidths=0.3)
    fig.colorbar(contour, ax=ax, label=label)
    ax.plot([0], [0], "r*", markersize=8)
    ax.set_xlabel("direction 1 (filter-normalised)")
    ax.set_ylabel("direction 2 (filter-normalised)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
