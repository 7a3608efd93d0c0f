"""Power EMA (Karras et al., "Analyzing and Improving the Training Dynamics of Diffusion Models", EDM2, CVPR 2024,
arXiv 2312.02696, section 3.1): an EMA whose decay grows with the number of updates, so that the average always
covers the same *fraction* of training rather than a fixed number of steps.

On the t-th averaging update (t = 1, 2, ...):

    decay_t = (1 - 1/t) ** (gamma + 1)        avg <- decay_t * avg + (1 - decay_t) * weights

decay_1 = 0, so the first update replaces the average by the weights (the copy made at binding does not count).
Unrolled, this is exactly a weighted mean of the weights theta_1 .. theta_t seen at the updates:

    avg_t = sum_i  w_i theta_i,    w_i = (i**(gamma+1) - (i-1)**(gamma+1)) / t**(gamma+1)

which sums to 1 and grows like i**gamma: a power-function profile (gamma = 0 is the uniform mean, i.e. SWA).

Karras et al. parameterise the width of this profile by sigma_rel, its standard deviation relative to its length:

    sigma_rel = sqrt((gamma + 1) / ((gamma + 2)**2 * (gamma + 3)))

`gamma_from_sigma_rel` inverts it (the root gamma >= 0 of gamma**3 + 7 gamma**2 + (16 - s**-2) gamma +
12 - s**-2 = 0, the same root ema-pytorch's `sigma_rel_to_gamma` takes), for sigma_rel in (0, 1/sqrt(12)];
sigma_rel = 0.10 gives gamma ~= 6.94 and sigma_rel = 0.05 gives gamma ~= 16.97. EDM2 tracks these two profiles
during training. Default here: sigma_rel = 0.10 (our choice of the two: the wider one suits short runs).
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import torch
from torch import nn

from sema._binding import TensorPlan, make_average, resolve_dtype
from sema.ema import BUFFER_POLICIES, FORMAT_VERSION, check_state, read_counters
from sema.schedules import check_choice, check_positive_int

SIGMA_REL_MAX = 1 / math.sqrt(12)  # sigma_rel at gamma = 0 (the uniform mean); larger widths need gamma < 0


def sigma_rel_from_gamma(gamma: float) -> float:
    """The relative standard deviation of the power-EMA profile with exponent gamma (>= 0)."""
    _check_gamma(gamma)
    return math.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3)))


def gamma_from_sigma_rel(sigma_rel: float) -> float:
    """The exponent gamma >= 0 whose profile has relative width `sigma_rel` in (0, 1/sqrt(12)].

    sigma_rel_from_gamma decreases strictly on [0, inf), so bisection finds the root to float precision."""
    ok = isinstance(sigma_rel, (int, float)) and not isinstance(sigma_rel, bool) and 0 < sigma_rel <= SIGMA_REL_MAX
    if not ok:
        raise ValueError(f"sigma_rel={sigma_rel!r} is outside the allowed range (0, {SIGMA_REL_MAX:.6f}] (gamma >= 0)")
    lo, hi = 0.0, 2.0 / sigma_rel + 10.0  # sigma_rel ~ 1/gamma for large gamma, so the root is below hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if sigma_rel_from_gamma(mid) > sigma_rel:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-15 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def _check_gamma(gamma: float) -> float:
    if not (isinstance(gamma, (int, float)) and not isinstance(gamma, bool) and math.isfinite(gamma) and gamma >= 0):
        raise ValueError(f"gamma={gamma!r} must be a finite number >= 0 (0 = uniform mean)")
    return float(gamma)


@dataclass
class PowerEMASettings:
    """Power EMA's settings (see `sema.settings`); kwargs() passes every field as it is: gamma, sigma_rel,
    update_every, buffers."""

    sigma_rel: Optional[float] = 0.10  # the profile's relative width (converted to gamma); None when gamma is set
    gamma: Optional[float] = None  # the profile exponent; set sigma_rel to None to use it
    update_every: int = 1  # update on every k-th optimizer step
    buffers: str = "average"  # average | copy | ignore

    def kwargs(self, steps_per_epoch: int) -> dict[str, Any]:
        return {"gamma": self.gamma, "sigma_rel": self.sigma_rel, "update_every": self.update_every,
                "buffers": self.buffers}


class PowerEMA:
    """Karras power-function EMA (see the module docstring for the exact formula).

    Args:
        model: the trained model (DDP / compiled models are unwrapped). Must have parameters.
        gamma: the profile exponent (>= 0). Give gamma or sigma_rel, not both.
        sigma_rel: the profile's relative width in (0, 0.2887]; converted to gamma. Default (neither given): 0.10.
        update_every: average on every k-th update() call only (integer >= 1); t counts averaging updates.
        buffers: "average" (floating buffers averaged, integer ones copied), "copy", "ignore"; as in `sema.EMA`.
        average_dtype, device: as in `sema.EMA` (float32 by default, next to the model).
    """

    Settings: ClassVar[type] = PowerEMASettings  # the settings in epochs a recipe gives (sema.settings)
    writes_model: ClassVar[bool] = False  # passive: never writes into the bound model (trajectories can be shared)

    def __init__(
        self,
        model: nn.Module,
        gamma: float | None = None,
        sigma_rel: float | None = None,
        *,
        update_every: int = 1,
        buffers: str = "average",
        average_dtype: torch.dtype | str | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        if gamma is not None and sigma_rel is not None:
            raise ValueError(f"give gamma or sigma_rel, not both (got gamma={gamma!r}, sigma_rel={sigma_rel!r})")
        self.gamma = _check_gamma(gamma) if gamma is not None else gamma_from_sigma_rel(
            0.10 if sigma_rel is None else sigma_rel)
        self.update_every = check_positive_int("update_every", update_every)
        self.buffers = check_choice("buffers", buffers, BUFFER_POLICIES)
        self.average_dtype = resolve_dtype(average_dtype)
        self.device = None if device is None else torch.device(device)
        average = make_average(model, self.average_dtype, self.device)
        self._plan = TensorPlan(model, average, buffers=buffers, follow_device=self.device is None)
        self._step = 0  # update() calls
        self._epoch = 0  # epoch_end() calls
        self._updates = 0  # averaging updates (t)

    @property
    def step(self) -> int:
        return self._step

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def updates(self) -> int:
        return self._updates

    @property
    def sigma_rel(self) -> float:
        return sigma_rel_from_gamma(self.gamma)

    def decay_at(self, t: int) -> float:
        """decay_t for the t-th averaging update (t >= 1)."""
        return (1.0 - 1.0 / t) ** (self.gamma + 1.0)

    def config(self) -> dict[str, Any]:
        return {"gamma": self.gamma, "update_every": self.update_every, "buffers": self.buffers,
                "average_dtype": None if self.average_dtype is None else str(self.average_dtype)}

    # ------------------------------------------------------------------ the protocol
    @property
    def average(self) -> nn.Module:
        return self._plan.average_module()

    def update(self) -> None:
        """One foreach lerp per tensor group with a Python-float weight: no device synchronisation."""
        self._step += 1
        if self._step == 1:
            self._plan.check()
        if self._step % self.update_every:
            return
        self._updates += 1
        self._plan.lerp_(1.0 - self.decay_at(self._updates))

    def epoch_end(self) -> bool:
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
        return {"format": "sema", "version": FORMAT_VERSION, "method": "PowerEMA", "config": self.config(),
                "step": self._step, "epoch": self._epoch, "updates": self._updates,
                "average": self._plan.average_state()}

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        check_state(state, "PowerEMA", self.config(), strict, keys=("step", "epoch", "updates", "average"))
        counters = read_counters(state, "step", "epoch", "updates")
        self._plan.check()
        self._plan.load_average_state(state["average"])
        self._step, self._epoch, self._updates = counters

    def __repr__(self) -> str:
        return f"PowerEMA(gamma={self.gamma:.4g}, sigma_rel={self.sigma_rel:.4g}, step={self._step})"
