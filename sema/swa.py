"""SWA: the uniform running mean of the weights seen (Izmailov et al., "Averaging Weights Leads to Wider Optima
and Better Generalization", UAI 2018), as `torch.optim.swa_utils.AveragedModel` computes it:

    n = 0: avg <- weights;    n >= 1: avg <- avg + (weights - avg) / (n + 1);    n <- n + 1

on the update() calls numbered start_steps + k * update_every (k = 1, 2, ...). Before the first of them the average
is the model as bound. Izmailov et al. start averaging after about 75% of the training budget (benchmarks:
`method.start_epochs`, converted to `start_steps`, by default the recipe's `averaging.tail_start`, which the quick
and paper recipes set to 0.75 x the epochs). BatchNorm statistics of an SWA average are usually re-estimated
after training with `sema.bn.update_bn` (buffers="ignore" then matches `AveragedModel(use_buffers=False)`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import torch
from torch import nn

from sema._binding import TensorPlan, make_average, resolve_dtype
from sema.bn import check_bn_update_batches
from sema.ema import BUFFER_POLICIES, FORMAT_VERSION, check_state, read_counters
from sema.schedules import check_choice, check_nonnegative_int, check_positive_int
from sema.settings import epochs_to_steps, recipe_field


@dataclass
class SWASettings:
    """SWA's settings in epochs (see `sema.settings`). kwargs: start_steps = round(start_epochs * steps_per_epoch);
    update_every, buffers, bn_update_batches as they are."""

    start_epochs: Optional[float] = recipe_field("tail_start")  # average only after this many epochs
    #                                                               (-> start_steps); Izmailov: ~0.75 x epochs;
    #                                                               None (outside a recipe) = 0
    update_every: int = 1  # average every k-th optimizer step after the start
    buffers: str = "average"  # average | copy | ignore
    bn_update_batches: Optional[int] = 50  # re-estimate the average's BatchNorm statistics from this many training
    #                                        batches before each evaluation (prepare_for_eval); None = keep the
    #                                        uniformly averaged ones

    def kwargs(self, steps_per_epoch: int) -> dict[str, Any]:
        return {"start_steps": epochs_to_steps("start_epochs", self.start_epochs, steps_per_epoch) or 0,
                "update_every": self.update_every, "buffers": self.buffers,
                "bn_update_batches": self.bn_update_batches}


class SWA:
    """Uniform average of the weights (see the module docstring).

    Args:
        model: the trained model (DDP / compiled models are unwrapped). Must have parameters.
        start_steps: update() calls at or before this one are not averaged (integer >= 0; default 0).
        start_step: the former name of start_steps (keyword only; give one of the two).
        update_every: average every k-th update() call after start_steps (integer >= 1).
        buffers: "average" (default: floating buffers averaged uniformly, integer ones copied), "copy", "ignore".
        average_dtype, device: as in `sema.EMA` (float32 by default, next to the model).
        bn_update_batches: `prepare_for_eval` re-estimates the average's BatchNorm statistics from this many
            batches (integer >= 1); None (default) keeps the uniformly averaged statistics.
    """

    Settings: ClassVar[type] = SWASettings  # the settings in epochs a recipe gives (sema.settings)
    writes_model: ClassVar[bool] = False  # passive: never writes into the bound model (trajectories can be shared)

    def __init__(
        self,
        model: nn.Module,
        start_steps: int | None = None,
        update_every: int = 1,
        buffers: str = "average",
        average_dtype: torch.dtype | str | None = None,
        device: torch.device | str | None = None,
        *,
        start_step: int | None = None,
        bn_update_batches: int | None = None,
    ) -> None:
        if start_step is None:
            self.start_steps = check_nonnegative_int("start_steps", 0 if start_steps is None else start_steps)
        elif start_steps is None:  # the former name, still accepted
            self.start_steps = check_nonnegative_int("start_step", start_step)
        else:
            raise ValueError(f"start_steps={start_steps!r} and start_step={start_step!r} were both given; "
                             "start_step is the former name of start_steps, give only start_steps")
        self.update_every = check_positive_int("update_every", update_every)
        self.buffers = check_choice("buffers", buffers, BUFFER_POLICIES)
        self.bn_update_batches = check_bn_update_batches(bn_update_batches, buffers)
        self.average_dtype = resolve_dtype(average_dtype)
        self.device = None if device is None else torch.device(device)
        average = make_average(model, self.average_dtype, self.device)
        self._plan = TensorPlan(model, average, buffers=buffers, follow_device=self.device is None)
        self._step = 0
        self._epoch = 0
        self.n_averaged = 0  # number of weight snapshots in the mean

    @property
    def step(self) -> int:
        """Number of update() calls so far."""
        return self._step

    @property
    def epoch(self) -> int:
        """Number of epoch_end() calls so far."""
        return self._epoch

    def config(self) -> dict[str, Any]:
        return {"start_steps": self.start_steps, "update_every": self.update_every, "buffers": self.buffers,
                "average_dtype": None if self.average_dtype is None else str(self.average_dtype),
                "bn_update_batches": self.bn_update_batches}

    @property
    def average(self) -> nn.Module:
        return self._plan.average_module()

    def update(self) -> None:
        """Add the current weights to the mean when this call is an averaging one. No device synchronisation."""
        self._step += 1
        if self._step == 1:
            self._plan.check()
        since = self._step - self.start_steps
        if since <= 0 or since % self.update_every:
            return
        if self.n_averaged == 0:
            self._plan.copy_from_model()
        else:
            self._plan.lerp_(1.0 / (self.n_averaged + 1))
        self.n_averaged += 1

    def epoch_end(self) -> bool:
        self._epoch += 1
        self._plan.check()
        return False

    def copy_to(self, model: nn.Module | None = None) -> None:
        self._plan.copy_to(model)

    def swapped(self) -> AbstractContextManager[nn.Module]:
        return self._plan.swapped()

    def prepare_for_eval(self, batches: Iterable[Any], forward: Callable[[Any], Any]) -> None:
        """With `bn_update_batches`: recompute the average's BatchNorm statistics (`sema.bn.update_bn`: reset,
        cumulative mean) from the first `bn_update_batches` of `batches`, and keep them in the average.

        `forward(batch)` runs the bound model's training forward pass on one batch (e.g. the training loss); it
        is called inside `swapped()`, so the model holds the averaged weights, in train mode, without autograd.
        The model's own weights and statistics are restored bit for bit afterwards. A no-op without
        `bn_update_batches` or without BatchNorm layers."""
        from sema.bn import recompute_average_bn

        recompute_average_bn(self._plan, self.average, batches, forward, self.bn_update_batches)

    def state_dict(self) -> dict[str, Any]:
        self._plan.check()
        return {"format": "sema", "version": FORMAT_VERSION, "method": "SWA", "config": self.config(),
                "step": self._step, "epoch": self._epoch, "n_averaged": self.n_averaged,
                "average": self._plan.average_state()}

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        check_state(state, "SWA", self.config(), strict, keys=("step", "epoch", "n_averaged", "average"))
        counters = read_counters(state, "step", "epoch", "n_averaged")
        self._plan.check()
        self._plan.load_average_state(state["average"])
        self._step, self._epoch, self.n_averaged = counters
