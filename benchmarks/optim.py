"""The optimizer, the peak learning rate at the run's global batch, and the per-step learning-rate multiplier,
shared by the engine and the framework runners.

Peak learning rate: a recipe gives `optim.lr` at `optim.reference_batch` (the global batch of its source, e.g. 2
images x 8 GPUs = 16 for the detection recipe; null = task.batch_size on one process). At another global batch
G = task.batch_size x processes, `optim.lr_scaling=linear` trains at lr x G / reference (Goyal et al. 2017) and
`none` refuses to run; result.json records G and the peak lr (runtime.global_batch, runtime.peak_lr).

    optimizer = build_optimizer(cfg.optim, param_groups)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(cfg.optim, steps_per_epoch, total_steps))

Multiplier at optimizer step s (0-based), with W = round(warmup_epochs * steps_per_epoch) and T = total_steps:

    s < W:        (s + 1) / W
    cosine:       f + (1 - f) * (1 + cos(pi * min(1, (s - W) / max(1, T - W)))) / 2,    f = min_lr / lr
    poly:         f + (1 - f) * (1 - min(1, (s - W) / max(1, T - W))) ** poly_power
    multistep:    gamma ** (number of milestones m with s >= round(m * steps_per_epoch))
    constant:     1
    onecycle:     torch's OneCycleLR (no warm-up of its own): with P = pct * T - 1, a = 1 / div, z = a / final_div,
                  s <= P: c(a, 1, s / P), else c(1, z, (s - P) / (T - 1 - P)),   c(u, v, t) = v + (u - v) (1 + cos(pi t)) / 2
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import torch


def lr_multiplier(cfg_optim: Any, steps_per_epoch: int, total_steps: int) -> Callable[[int], float]:
    """Per-step factor on the peak lr: linear warm-up from 0, then cosine (to min_lr), constant or multistep."""
    warmup = int(round(cfg_optim.warmup_epochs * steps_per_epoch))
    floor = cfg_optim.min_lr / cfg_optim.lr
    milestones = [int(round(m * steps_per_epoch)) for m in cfg_optim.milestones]

    if cfg_optim.schedule == "onecycle":
        return _one_cycle(cfg_optim, total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg_optim.schedule == "cosine":
            progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        if cfg_optim.schedule == "poly":
            progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
            return floor + (1 - floor) * (1 - progress) ** cfg_optim.poly_power
        if cfg_optim.schedule == "multistep":
            return cfg_optim.gamma ** sum(step >= m for m in milestones)
        return 1.0

    return factor


def _one_cycle(cfg_optim: Any, total_steps: int) -> Callable[[int], float]:
    """OneCycleLR's two cosine phases (anneal_strategy="cos", three_phase=False) as a factor on the peak lr."""
    start = 1.0 / cfg_optim.onecycle_div
    end = start / cfg_optim.onecycle_final_div
    peak_step = float(cfg_optim.onecycle_pct * total_steps) - 1
    last = total_steps - 1

    def anneal(u: float, v: float, t: float) -> float:
        return v + (u - v) / 2.0 * (math.cos(math.pi * t) + 1)

    def factor(step: int) -> float:
        if step <= peak_step:
            return anneal(start, 1.0, step / peak_step) if peak_step > 0 else 1.0
        return anneal(1.0, end, min(1.0, (step - peak_step) / max(last - peak_step, 1e-12)))

    return factor


def peak_lr(cfg_optim: Any, batch_size: int, world_size: int) -> tuple[float, int]:
    """(the peak learning rate, the global batch) of a run with `world_size` processes of `batch_size` each."""
    global_batch = batch_size * world_size
    reference = cfg_optim.reference_batch or batch_size
    if global_batch == reference:
        return float(cfg_optim.lr), global_batch
    if cfg_optim.lr_scaling == "none":
        raise ValueError(
            f"this recipe's lr {cfg_optim.lr} is for a global batch of {reference} (optim.reference_batch), but "
            f"{world_size} process(es) x task.batch_size={batch_size} = {global_batch}; run on "
            f"{reference // batch_size if reference % batch_size == 0 else 'a matching number of'} processes, set "
            f"task.batch_size, or allow optim.lr_scaling=linear (lr x global / reference)")
    return float(cfg_optim.lr) * global_batch / reference, global_batch


def build_optimizer(cfg_optim: Any, groups: list[dict], lr: Optional[float] = None) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov, L2 weight decay), AdamW (decoupled decay) or Adam from `cfg.optim`, at `lr`
    (default: optim.lr; the engine passes `peak_lr`)."""
    lr = cfg_optim.lr if lr is None else lr
    if cfg_optim.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg_optim.momentum, nesterov=cfg_optim.nesterov,
                               weight_decay=cfg_optim.weight_decay)
    if cfg_optim.name == "lars":
        from timm.optim import Lars

        return Lars(groups, lr=lr, momentum=cfg_optim.momentum, weight_decay=cfg_optim.weight_decay)
    optimizer_class = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}[cfg_optim.name]
    return optimizer_class(groups, lr=lr, betas=tuple(cfg_optim.betas), weight_decay=cfg_optim.weight_decay)


# Parameters of >= 2 dimensions that the official AdamW configs also exclude from weight decay (by name).
NO_DECAY_NAMES = ("cls_token", "dist_token", "pos_embed", "absolute_pos_embed", "relative_position_bias_table")


def without_decay_on_1d(groups: list[dict], names: dict[int, str] | None = None) -> list[dict]:
    """Each group split in two: its >= 2-D parameters as they are, its 1-D ones (norm weights, biases, layer
    scales) and those named like NO_DECAY_NAMES (`names`: id(param) -> name) with weight_decay 0
    (optim.decay_1d=false). Empty groups are dropped."""
    names = names or {}

    def exempt(p) -> bool:
        return p.ndim < 2 or any(token in names.get(id(p), "") for token in NO_DECAY_NAMES)

    out = []
    for group in groups:
        params = list(group["params"])
        out.append({**group, "params": [p for p in params if not exempt(p)]})
        out.append({**group, "params": [p for p in params if exempt(p)], "weight_decay": 0.0})
    return [g for g in out if g["params"]]
