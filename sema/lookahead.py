"""Lookahead (Zhang, Lucas, Hinton & Ba, "Lookahead Optimizer: k steps forward, 1 step back", NeurIPS 2019,
arXiv 1907.08610): the inner optimizer moves the "fast" weights theta for k steps; then the "slow" weights phi
are pulled towards them and the fast weights restart from the slow ones:

    every k-th optimizer step:    phi <- phi + alpha * (theta - phi);    theta <- phi

phi starts as the weights at binding. The inner optimizer's state (momentum, Adam moments) is kept across the
reset, as in the paper's experiments. The weights the method stands for (`average`, evaluated inside
`swapped()`) are the slow weights phi, as in the authors' code, which evaluates after loading the slow weights.
Only parameters take part by default (`buffers="ignore"`): BatchNorm statistics are not optimised, so the model
keeps its own and the slow weights are evaluated with them. Defaults k = 5, alpha = 0.5 (the paper's).

Two ways to drive it, pick one:
* `update()` after every `optimizer.step()`, like every other `sema` method (what the benchmark engine does);
* `wrap_optimizer(optimizer)`: registers a step post-hook, so the sync runs inside `optimizer.step()` (an
  optimizer wrapper; steps an AMP GradScaler skips are then not counted). `update()` is a no-op afterwards, so
  an engine that does both still counts every optimizer step once.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from sema._binding import TensorPlan, make_average, resolve_dtype
from sema.ema import BUFFER_POLICIES, FORMAT_VERSION, check_state, read_counters
from sema.schedules import check_choice, check_positive_int


@dataclass
class LookaheadSettings:
    """Lookahead's settings (see `sema.settings`); kwargs() passes every field as it is: k, alpha, buffers."""

    k: int = 5  # fast steps per sync
    alpha: float = 0.5  # slow-weights step size, (0, 1]
    buffers: str = "ignore"  # the model's own buffers

    def kwargs(self, steps_per_epoch: int) -> dict[str, Any]:
        return {"k": self.k, "alpha": self.alpha, "buffers": self.buffers}


class Lookahead:
    """Lookahead's slow weights as a weight-averaging method (see the module docstring for the exact update).

    Args:
        model: the trained model (DDP / compiled models are unwrapped). Must have parameters.
        k: number of fast (inner optimizer) steps between two syncs; integer >= 1. Default 5.
        alpha: slow-weights step size in (0, 1]. Default 0.5. alpha = 1 makes Lookahead the inner optimizer.
        buffers: "ignore" (default: the model's own buffers are kept and used), "copy", "average".
        average_dtype, device: as in `sema.EMA` (the slow weights are float32 by default, next to the model).
    """

    Settings: ClassVar[type] = LookaheadSettings  # the settings in epochs a recipe gives (sema.settings)
    writes_model: ClassVar[bool] = True  # writes into the bound model: its trajectory is its own

    def __init__(
        self,
        model: nn.Module,
        k: int = 5,
        alpha: float = 0.5,
        *,
        buffers: str = "ignore",
        average_dtype: torch.dtype | str | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        self.k = check_positive_int("k", k)
        ok = isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and math.isfinite(alpha) and 0 < alpha <= 1
        if not ok:
            raise ValueError(f"alpha={alpha!r} is outside the allowed range (0, 1]")
        self.alpha = float(alpha)
        self.buffers = check_choice("buffers", buffers, BUFFER_POLICIES)
        self.average_dtype = resolve_dtype(average_dtype)
        self.device = None if device is None else torch.device(device)
        slow = make_average(model, self.average_dtype, self.device)
        self._plan = TensorPlan(model, slow, buffers=buffers, follow_device=self.device is None)
        self._step = 0  # fast steps counted (update() calls, or optimizer steps once wrapped)
        self._epoch = 0
        self.syncs = 0  # number of slow-weight updates
        self._hook = None  # the optimizer step post-hook handle, once wrapped

    @property
    def step(self) -> int:
        return self._step

    @property
    def epoch(self) -> int:
        return self._epoch

    def config(self) -> dict[str, Any]:
        return {"k": self.k, "alpha": self.alpha, "buffers": self.buffers,
                "average_dtype": None if self.average_dtype is None else str(self.average_dtype)}

    # ------------------------------------------------------------------ the optimizer side
    def wrap_optimizer(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        """Run the Lookahead step inside `optimizer.step()` (a step post-hook) and return the same optimizer; its
        state_dict is unchanged. Afterwards update() does nothing. Call once."""
        if self._hook is not None:
            raise RuntimeError("wrap_optimizer() was already called for this Lookahead")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ValueError(f"optimizer={type(optimizer).__name__} is not a torch.optim.Optimizer")
        self._hook = optimizer.register_step_post_hook(lambda opt, args, kwargs: self._fast_step())
        return optimizer

    def _fast_step(self) -> None:
        self._step += 1
        if self._step == 1:
            self._plan.check()
        if self._step % self.k == 0:
            self.sync()

    def sync(self) -> None:
        """phi <- phi + alpha * (theta - phi); theta <- phi, now (two foreach kernels per tensor group)."""
        self._plan.lerp_(self.alpha)
        self._plan.copy_into_model()
        self.syncs += 1

    # ------------------------------------------------------------------ the protocol
    @property
    def average(self) -> nn.Module:
        """The slow weights phi."""
        return self._plan.average_module()

    def update(self) -> None:
        """Count one fast step (call after optimizer.step()); every k-th one syncs. A no-op once wrap_optimizer()
        was called (the optimizer hook counts then). No device synchronisation."""
        if self._hook is None:
            self._fast_step()

    def epoch_end(self) -> bool:
        """Count the epoch. Lookahead writes into the model inside update() (every k steps), never here: False."""
        self._epoch += 1
        self._plan.check()
        return False

    def copy_to(self, model: nn.Module | None = None) -> None:
        self._plan.copy_to(model)

    def swapped(self) -> AbstractContextManager[nn.Module]:
        return self._plan.swapped()

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        self._plan.check()
        return {"format": "sema", "version": FORMAT_VERSION, "method": "Lookahead", "config": self.config(),
                "step": self._step, "epoch": self._epoch, "syncs": self.syncs, "average": self._plan.average_state()}

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        check_state(state, "Lookahead", self.config(), strict, keys=("step", "epoch", "syncs", "average"))
        counters = read_counters(state, "step", "epoch", "syncs")
        self._plan.check()
        self._plan.load_average_state(state["average"])
        self._step, self._epoch, self.syncs = counters

    def __repr__(self) -> str:
        return f"Lookahead(k={self.k}, alpha={self.alpha}, step={self._step}, syncs={self.syncs})"
