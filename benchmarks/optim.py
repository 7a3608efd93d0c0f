"""The optimizer and the per-step learning-rate multiplier, shared by the engine and the framework runners.

    optimizer = build_optimizer(cfg.optim, param_groups)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(cfg.optim, steps_per_epoch, total_steps))

Multiplier at optimizer step s (0-based), with W = round(warmup_epochs * steps_per_epoch) and T = total_steps:

    s < W:        (s + 1) / W
    cosine:       f + (1 - f) * (1 + cos(pi * min(1, (s - W) / max(1, T - W)))) / 2,    f = min_lr / lr
    multistep:    gamma ** (number of milestones m with s >= round(m * steps_per_epoch))
    constant:     1
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch


def lr_multiplier(cfg_optim: Any, steps_per_epoch: int, total_steps: int) -> Callable[[int], float]:
    """Per-step factor on the peak lr: linear warm-up from 0, then cosine (to min_lr), constant or multistep."""
    warmup = int(round(cfg_optim.warmup_epochs * steps_per_epoch))
    floor = cfg_optim.min_lr / cfg_optim.lr
    milestones = [int(round(m * steps_per_epoch)) for m in cfg_optim.milestones]

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg_optim.schedule == "cosine":
            progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        if cfg_optim.schedule == "multistep":
            return cfg_optim.gamma ** sum(step >= m for m in milestones)
        return 1.0

    return factor


def build_optimizer(cfg_optim: Any, groups: list[dict]) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov, L2 weight decay), AdamW (decoupled decay) or Adam from `cfg.optim`."""
    if cfg_optim.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg_optim.lr, momentum=cfg_optim.momentum, nesterov=cfg_optim.nesterov,
                               weight_decay=cfg_optim.weight_decay)
    optimizer_class = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}[cfg_optim.name]
    return optimizer_class(groups, lr=cfg_optim.lr, betas=tuple(cfg_optim.betas), weight_decay=cfg_optim.weight_decay)
