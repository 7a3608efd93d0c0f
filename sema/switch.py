"""SEMA (Switch EMA): an EMA whose average is copied back into the trained model on a fixed cadence.

Li et al., "Switch EMA: A Free Lunch for Better Flatness and Sharpness", arXiv 2402.09240. The EMA is updated
after every optimizer step as usual; at the end of every epoch (or every N steps) the average is written into the
trained model, which trains on from there. The optimizer state (momentum buffers, Adam moments) is left untouched,
as in every official implementation.

Cadence (`switch_unit="epoch"`): `epoch_end()` after the n-th epoch (n = 1, 2, ...) switches iff

    n > switch_start  and  (n - switch_start) % switch_every == 0  and  (switch_end is None or n <= switch_end)

With `switch_unit="step"` the same rule is applied to n = the number of `update()` calls, right after the EMA
update of that call. `switch_unit` defaults to the preset's: "epoch", except "step" under preset="keras", where
`switch_every=f` is Keras' `ema_overwrite_frequency=f` (overwrite after optimizer steps f, 2f, ...; see
`sema.presets`). Example: switch_every=2, switch_start=2 switches after epochs 4, 6, 8, ... After a switch
with `switch_blend=1` the model equals the average exactly (cast to the model's dtype); `switch_blend=b < 1` moves
the model only part of the way: `model <- model + b * (average - model)`. Buffers follow the averager's `buffers`
policy ("ignore": the model keeps its own).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Optional

from torch import nn

from sema.ema import EMA, EMASettings
from sema.presets import check_preset
from sema.schedules import check_choice, check_nonnegative_int, check_open_unit, check_positive_int
from sema.settings import epochs_to_steps, recipe_field, whole_epochs

SWITCH_UNITS = ("epoch", "step")


def drift_kept(decay: float, steps: int) -> float:
    """The fraction of a steady weight drift that survives one switch cycle of `steps` updates at constant `decay`.

    Right after a switch the average equals the model; if the weights then move by v per step, after n updates the
    model has moved n*v and the average n*v * (1 - d*(1 - d**n) / (n*(1 - d))), which the next switch writes back.
    E.g. decay 0.999 over 500 steps keeps 0.21 of the drift, 0.9 over 78 steps keeps 0.88 (docs/sema.md).
    """
    check_open_unit("decay", decay)
    check_positive_int("steps", steps)
    return 1.0 - decay * (1.0 - decay**steps) / (steps * (1.0 - decay))


@dataclass(frozen=True)
class SwitchCadence:
    """When to switch, counted in epochs or update() calls (see the module docstring)."""

    every: int = 1  # switch_every: switch on every k-th epoch/step after the start
    start: int = 0  # switch_start: no switch at or before this epoch/step
    unit: str = "epoch"  # switch_unit: "epoch" (epoch_end calls) or "step" (update calls)
    end: int | None = None  # switch_end: no switch after this epoch/step; None = never stop

    def __post_init__(self) -> None:
        check_positive_int("switch_every", self.every)
        check_nonnegative_int("switch_start", self.start)
        check_choice("switch_unit", self.unit, SWITCH_UNITS)
        if self.end is not None:
            check_nonnegative_int("switch_end", self.end)

    def due(self, n: int) -> bool:
        """True when the n-th epoch/step (1-based) ends with a switch."""
        if n <= self.start or (self.end is not None and n > self.end):
            return False
        return (n - self.start) % self.every == 0


@dataclass
class SEMASettings(EMASettings):
    """SEMA's settings in epochs: EMA's (`sema.ema.EMASettings`) plus the switch cadence.

    kwargs: EMA's, plus switch_every, switch_unit, switch_blend as they are, and switch_start / switch_end given in
    epochs: with switch_unit="epoch" passed as whole epochs, with switch_unit="step" converted,
    switch_start_steps = round(switch_start * steps_per_epoch) (likewise switch_end). `switch_unit` is always passed
    (default "epoch"): with preset="keras" set switch_unit="step" too, so that switch_every counts optimizer steps.
    """

    switch_start: Optional[float] = recipe_field("switch_start")  # no switch before the end of this epoch
    switch_every: int = 1  # switch on every k-th epoch (or step, per switch_unit) after switch_start
    switch_unit: str = "epoch"  # epoch | step: what switch_every counts
    switch_end: Optional[float] = None  # no switch after this many epochs; None = switch until the end
    switch_blend: float = 1.0  # model <- model + switch_blend * (average - model) at a switch; (0, 1]

    def kwargs(self, steps_per_epoch: int) -> dict[str, Any]:
        if self.switch_unit == "step":
            start = epochs_to_steps("switch_start", self.switch_start, steps_per_epoch)
            end = epochs_to_steps("switch_end", self.switch_end, steps_per_epoch)
        else:
            start, end = whole_epochs("switch_start", self.switch_start), whole_epochs("switch_end", self.switch_end)
        return {**super().kwargs(steps_per_epoch), "switch_every": self.switch_every,
                "switch_start": 0 if start is None else start, "switch_unit": self.switch_unit, "switch_end": end,
                "switch_blend": self.switch_blend}


class SEMA(EMA):
    """Switch EMA. All EMA arguments (see `sema.EMA`), plus:

    Args:
        switch_every: switch on every k-th epoch (or step) after `switch_start`; integer >= 1. Default 1.
        switch_start: no switch at or before this epoch (or step); integer >= 0. Default 0 (the paper's configs
            use 5, the length of their decay warm-up).
        switch_unit: "epoch" (counted by `epoch_end()`) or "step" (counted by `update()`). None (default): the
            preset's, "epoch" ("step" for preset="keras").
        switch_end: no switch after this epoch (or step); None (default) never stops.
        switch_blend: in (0, 1]; 1 (default) copies the average into the model, b < 1 moves the model a fraction
            b of the way (`model <- model + b * (average - model)`).

    `epoch_end()` returns True when the model was written into since the previous `epoch_end()`: its own switch,
    or with switch_unit="step" any switch during the epoch (so a loop learns of step switches once per epoch);
    `switches` counts every switch. The switch is one foreach copy per tensor group.
    """

    Settings: ClassVar[type] = SEMASettings  # the settings in epochs a recipe gives (sema.settings)
    writes_model: ClassVar[bool] = True  # writes into the bound model: its trajectory is its own

    def __init__(
        self,
        model: nn.Module,
        decay: float | None = None,
        *,
        switch_every: int = 1,
        switch_start: int = 0,
        switch_unit: str | None = None,
        switch_end: int | None = None,
        switch_blend: float = 1.0,
        **ema_kwargs,
    ) -> None:
        if switch_unit is None:
            switch_unit = check_preset(ema_kwargs.get("preset", "paper")).switch_unit
        self.cadence = SwitchCadence(switch_every, switch_start, switch_unit, switch_end)
        self.switch_blend = check_open_unit("switch_blend", switch_blend, closed_right=True)
        self.switches = 0  # number of switches done
        self._switches_reported = 0  # switches already reported by epoch_end()
        self._by_step = switch_unit == "step"
        super().__init__(model, decay, **ema_kwargs)

    def config(self) -> dict:
        return {
            **super().config(),
            "switch_every": self.cadence.every,
            "switch_start": self.cadence.start,
            "switch_unit": self.cadence.unit,
            "switch_end": self.cadence.end,
            "switch_blend": self.switch_blend,
        }

    def update(self) -> None:
        EMA.update(self)
        if self._by_step and self.cadence.due(self._step):
            self.switch()

    def epoch_end(self) -> bool:
        super().epoch_end()
        if self.cadence.unit == "epoch" and self.cadence.due(self._epoch):
            self.switch()
        wrote = self.switches > self._switches_reported
        self._switches_reported = self.switches
        return wrote

    def switch(self) -> None:
        """Write the average into the bound model now (blended by `switch_blend`), whatever the cadence."""
        self._plan.copy_into_model(blend=self.switch_blend)
        self.switches += 1

    def _counters(self) -> dict:
        return {**super()._counters(), "switches": self.switches}

    def _load_counters(self, counters: dict) -> None:
        super()._load_counters(counters)
        self.switches = counters["switches"]
        self._switches_reported = self.switches  # checkpoints come at epoch ends (or report at the next one)
