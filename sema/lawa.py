"""LAWA, LAtest Weight Averaging: the uniform mean of the k most recent snapshots of the weights.

    snapshots s_1, s_2, ... taken every `every` epochs (unit="epoch") or update() calls (unit="step"), after `start`
    avg = (1/n) * (s_{j-n+1} + ... + s_j),    n = min(k, j),    j = number of snapshots taken so far

Before the first snapshot the average is the model's current weights (nothing has been averaged yet, so the
weights to evaluate are the model's own). Integer buffers (BatchNorm's batch counter) take the newest snapshot's
value; floating buffers are averaged like the weights under `buffers="average"`.

References and the variants their settings give:
* Kaddour, "Stop Wasting My Time! Saving Days of ImageNet and BERT Training with Latest Weight Averaging",
  arXiv 2209.14981 (2022): one snapshot at the end of every epoch, mean of the latest k
  (unit="epoch", every=1).
* Sanyal et al., "Early Weight Averaging meets High Learning Rates for LLM Pre-training", arXiv 2306.03241
  (2023): snapshots every nu optimizer steps (unit="step", every=nu).
* Ajroldi, Orvieto & Geiping, "When, Where and Why to Average Weights?", ICML 2025, arXiv 2502.06761: a queue of
  the last k snapshots taken every `every_pct` of the step budget after a burn-in of `burnin_pct` of it; their
  best AlgoPerf setting is k=5, every 0.2% of the steps, burn-in 10% (unit="step", every=0.002*T,
  start=0.1*T for T total steps).

Cost: k copies of the weights (in the average's dtype, float32 by default) plus the average. update() is a
counter increment, and one foreach copy on snapshot steps; the mean is computed only when the average is read
(`average`, `swapped()`, `copy_to()`), summing the snapshots oldest first, so a resumed run reads the same bits.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from sema._binding import TensorPlan, make_average, resolve_dtype
from sema._grouped_state import GroupedState, sync_plan
from sema.ema import BUFFER_POLICIES, FORMAT_VERSION, check_state, read_counters
from sema.schedules import check_choice, check_nonnegative_int, check_positive_int

SNAPSHOT_UNITS = ("epoch", "step")


@dataclass
class LAWASettings:
    """LAWA's settings (see `sema.settings`). Counted in LAWA's own `unit`, so kwargs() passes every field as it
    is: k, every, start, unit, buffers."""

    k: int = 5  # snapshots in the mean
    every: int = 1  # a snapshot every `every` units after `start`
    start: int = 0  # no snapshot at or before this epoch/step (burn-in)
    unit: str = "epoch"  # epoch (Kaddour 2022: one snapshot per epoch) | step (Sanyal 2023, Ajroldi 2025)
    buffers: str = "average"  # average | copy | ignore

    def kwargs(self, steps_per_epoch: int) -> dict[str, Any]:
        return {"k": self.k, "every": self.every, "start": self.start, "unit": self.unit, "buffers": self.buffers}


class LAWA:
    """Mean of the latest k weight snapshots (see the module docstring for the formula and variants).

    Args:
        model: the trained model (DDP / compiled models are unwrapped). Must have parameters.
        k: number of snapshots in the mean (integer >= 1). Default 5 (Ajroldi et al.'s best queue length).
        every: take a snapshot every `every` units after `start` (integer >= 1). Default 1.
        start: no snapshot at or before this epoch / update() call (integer >= 0; the burn-in). Default 0.
        unit: "epoch" (counted by epoch_end(), Kaddour 2022; default) or "step" (counted by update()).
        buffers: "average" (default), "copy" (the newest snapshot's), "ignore" (the model's own at evaluation).
        average_dtype, device: as in `sema.EMA` (float32 by default, next to the model).
    """

    Settings: ClassVar[type] = LAWASettings  # the settings in epochs a recipe gives (sema.settings)
    writes_model: ClassVar[bool] = False  # passive: never writes into the bound model (trajectories can be shared)

    def __init__(
        self,
        model: nn.Module,
        k: int = 5,
        *,
        every: int = 1,
        start: int = 0,
        unit: str = "epoch",
        buffers: str = "average",
        average_dtype: torch.dtype | str | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        self.k = check_positive_int("k", k)
        self.every = check_positive_int("every", every)
        self.start = check_nonnegative_int("start", start)
        self.unit = check_choice("unit", unit, SNAPSHOT_UNITS)
        self.buffers = check_choice("buffers", buffers, BUFFER_POLICIES)
        self.average_dtype = resolve_dtype(average_dtype)
        self.device = None if device is None else torch.device(device)
        average = make_average(model, self.average_dtype, self.device)
        self._plan = TensorPlan(model, average, buffers=buffers, follow_device=self.device is None)
        self._slots = [GroupedState(self._plan) for _ in range(self.k)]  # a ring; snapshot j lives in slot j % k
        self._step = 0  # update() calls
        self._epoch = 0  # epoch_end() calls
        self.snapshots = 0  # snapshots taken so far (j)
        self._stale = True  # the average module does not hold the current mean

    @property
    def step(self) -> int:
        return self._step

    @property
    def epoch(self) -> int:
        return self._epoch

    def config(self) -> dict[str, Any]:
        return {"k": self.k, "every": self.every, "start": self.start, "unit": self.unit, "buffers": self.buffers,
                "average_dtype": None if self.average_dtype is None else str(self.average_dtype)}

    # ------------------------------------------------------------------ snapshots and the mean
    def _due(self, n: int) -> bool:
        return n > self.start and (n - self.start) % self.every == 0

    def snapshot(self) -> None:
        """Take a snapshot of the model now, whatever the cadence (one foreach copy per tensor group)."""
        sync_plan(self._plan)
        self._plan.copy_from_model(self._slots[self.snapshots % self.k].lists())
        self.snapshots += 1
        self._stale = True

    def _chronological(self, snapshots: int | None = None) -> list[GroupedState]:
        """The slots holding the latest min(k, j) snapshots, oldest first (j = `snapshots`, default: taken so far)."""
        j = self.snapshots if snapshots is None else snapshots
        n = min(self.k, j)
        return [self._slots[(j - n + i) % self.k] for i in range(n)]

    def _refresh(self) -> None:
        """Write the current mean into the average module (only when it changed since the last read)."""
        if self.snapshots == 0:  # nothing averaged yet: the weights to evaluate are the model's own
            self._plan.check()
            self._plan.copy_from_model()
            return
        if not self._stale:
            return
        self._plan.check()
        slots = [s.lists() for s in self._chronological()]
        with torch.no_grad():
            for gi, g in enumerate(self._plan.groups):
                if g.kind == "copy":
                    torch._foreach_copy_(g.average, slots[-1][gi])
                    continue
                torch._foreach_copy_(g.average, slots[0][gi])
                for s in slots[1:]:
                    torch._foreach_add_(g.average, s[gi])
                if len(slots) > 1:
                    torch._foreach_div_(g.average, float(len(slots)))
        self._stale = False

    # ------------------------------------------------------------------ the protocol
    @property
    def average(self) -> nn.Module:
        self._refresh()
        return self._plan.average_module()

    def update(self) -> None:
        """Count the step; on snapshot steps (unit="step") one foreach copy. No device synchronisation."""
        self._step += 1
        if self._step == 1:
            self._plan.check()
        if self.unit == "step" and self._due(self._step):
            self.snapshot()

    def epoch_end(self) -> bool:
        """Count the epoch; on snapshot epochs (unit="epoch") take one. Never writes into the model: False."""
        self._epoch += 1
        self._plan.check()
        if self.unit == "epoch" and self._due(self._epoch):
            self.snapshot()
        return False

    def copy_to(self, model: nn.Module | None = None) -> None:
        self._refresh()
        self._plan.copy_to(model)

    def swapped(self) -> AbstractContextManager[nn.Module]:
        self._refresh()
        return self._plan.swapped()

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The snapshots (oldest first, by canonical name) and the counters; the mean is recomputed on load."""
        self._plan.check()
        return {"format": "sema", "version": FORMAT_VERSION, "method": "LAWA", "config": self.config(),
                "step": self._step, "epoch": self._epoch, "snapshots": self.snapshots,
                "queue": [s.state() for s in self._chronological()]}

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        check_state(state, "LAWA", self.config(), strict, keys=("step", "epoch", "snapshots", "queue"))
        step, epoch, snapshots = read_counters(state, "step", "epoch", "snapshots")
        queue = state["queue"]
        if not isinstance(queue, (list, tuple)):
            raise ValueError(
                f"state_dict['queue'] must be a list of snapshots (oldest first), got {type(queue).__name__}"
            )
        if len(queue) != min(snapshots, self.k):
            raise ValueError(f"state_dict holds {len(queue)} snapshots but says {snapshots} were taken with k={self.k}; "
                             f"expected {min(snapshots, self.k)}")
        self._plan.check()
        slots = self._chronological(snapshots)
        checked = [slot.validate(saved, f"LAWA snapshot {i} (of {len(slots)}, oldest first)")
                   for i, (slot, saved) in enumerate(zip(slots, queue))]
        for slot, saved in zip(slots, checked):
            slot.assign(saved)
        self.snapshots, self._step, self._epoch = snapshots, step, epoch
        self._stale = True

    def __repr__(self) -> str:
        return f"LAWA({', '.join(f'{k}={v!r}' for k, v in self.config().items())}, snapshots={self.snapshots})"
