"""BEMA, bias-corrected EMA (Block & Zhang, "EMA Without the Lag: Bias-Corrected Iterate Averaging Schemes",
arXiv 2508.00180, 2025): an EMA with a decaying weight, plus a correction term that removes the EMA's lag behind
the current weights.

Let n count update() calls, tau = `burnin_steps` the burn-in. At n = tau (at binding when tau = 0) the weights are
snapshotted: theta_0 <- theta, EMA <- theta. Then, on every call n > tau with (n - tau) % `update_every` == 0:

    t       = n - tau   (t_origin="burnin", default)   or   n   (t_origin="start", TRL's global step)
    beta_t  = max((rho + gamma * t) ** -kappa, beta_min)          weight on the new weights
    EMA_t   = (1 - beta_t) * EMA_{t-1} + beta_t * theta_t
    alpha_t = (rho + gamma * t) ** -eta

and the weights the method stands for (evaluated, saved, copied) are

    mu = alpha_t * (theta - theta_0) + EMA

computed when they are read, from the model's current weights theta and the t of the latest EMA update (before
the first one: the snapshot's t, 0 with t_origin="burnin", tau with "start"). Before the burn-in ends, mu is the
model's own weights. Knobs: kappa = `ema_power`, eta = `bias_power`, rho = `lag`, gamma = `multiplier`,
phi = `update_every`. `ema_power = 0` makes EMA = theta (no averaging); `bias_power = 0` makes alpha = 1 (the
undecayed correction); `bias_power` large makes alpha ~ 0 (a plain decaying EMA), as in TRL.

Presets (`preset=`; explicit `update_every` / `t_origin` win):

    "sema" (default)  update_every=1 (the analysed scheme), t_origin="burnin" (t counts from the snapshot).
    "trl"             TRL's BEMACallback defaults and clock: update_every=400, t_origin="start".

Both share kappa 0.5, eta 0.2, rho 10, gamma 1, beta_min 0, tau 0 (the defaults of the arguments).

The burn-in, and why the benchmark sets one. BEMA was made for fine-tuning: theta_0 is a pretrained model and
tau = 0, so theta - theta_0 is the fine-tuning's own displacement. Trained from scratch with tau = 0, theta_0 is
the random initialisation and mu adds alpha_t times the whole distance travelled from it: the CPU suite's first
pass at tau = 0 (results/cpu at commit 1a8a1fc, 3-5 seeds) lost to the baseline on 5 of 8 tasks, by 37 points of
accuracy on classification. So `BEMASettings.burnin_epochs` defaults to the recipe's `averaging.tail_start`, the start of
the run's tail that SWA also averages (0.75 x the epochs in the quick and paper recipes: theta_0 is the weights
three quarters in, where the remaining run is a fine-tuning of them). `method.burnin_epochs=0` gives the
published default back; plain Python (`BEMA(model)`) keeps tau = 0.

What the reference codes do (they agree on the formulas above except where said):

  TRL `BEMACallback` (huggingface/trl, trl/trainer/callbacks.py): update_freq=400, ema_power=0.5, bias_power=0.2,
      lag=10, multiplier=1, min_ema_multiplier=0, update_after=0, state on the CPU. t is the global step: the
      snapshot at step tau (at train begin when tau = 0), EMA updates at steps n > tau with
      (n - tau) % update_freq == 0, each with beta_n and alpha_n of the global step n. TRL computes mu at update
      steps only, from theta at that step (between updates, and at the end of training unless it falls on an
      update step, its model is the one of the latest update; before the first update, the initial model), for
      parameters with requires_grad only, and its model keeps the buffers of train begin. `preset="trl"` gives
      its cadence and clock: our mu equals TRL's at every update step. Differences that remain: between updates
      ours follows the model's current weights; buffers are the model's current ones ("ignore"); frozen
      parameters are included (their mu is their constant value); the state is on the model's device unless
      `device="cpu"` (TRL's placement, which makes update() synchronise).
  abblock/bema, the authors' `src/core_online.py`: update_freq=100 in the code, 400 in
      hydra_configs/stabilizer/bema.yaml (which also sets min_ema_multiplier=1e-4). Its first version (commit
      0b58bd0, June 2025) uses t = max(n - tau + lag, 1) in beta_t = (1 + gamma t)^-kappa and
      alpha_t = (1 + gamma t)^-eta: our formula counted from the burn-in with rho = 1 + gamma * lag (11 for the
      defaults), but snapshots at the first step n >= tau (after step 1 when tau = 0), updates on global steps
      n % update_freq == 0, and turns EMA / correction off with a negative power. Its latest version (ae31c04,
      December 2025) is another scheme: t_eff = max(0, n - lag), beta = gamma (1 + t_eff)^-kappa,
      alpha = gamma (1 + t_eff)^-eta, theta_0 = the weights at train begin whatever update_after is, the first
      update at step update_freq - 1, and bias_power <= 0 turns the correction off. No preset reproduces the
      authors' code: its versions disagree with each other and with the paper's formula; the first one is
      `BEMA(model, lag=11.0, burnin_steps=tau)` up to its snapshot step and cadence.

Cost: three copies of the weights (EMA, theta_0, and the module that holds mu); update() is one foreach lerp per
tensor group (12 bytes/parameter in float32), mu costs four foreach kernels when read.

Buffers: by default (`buffers="ignore"`) mu is evaluated with the model's own buffers (BatchNorm statistics), as
in the reference codes, which correct trainable parameters only. The correction extrapolates, and applied to a
BatchNorm running variance it can make it negative (we saw this on the classification smoke run: NaN outputs,
chance accuracy), so `buffers="average"` (floating buffers corrected like the weights) is opt-in.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import torch
from torch import nn

from sema._binding import TensorPlan, make_average, resolve_dtype
from sema._grouped_state import GroupedState, sync_plan
from sema.ema import BUFFER_POLICIES, FORMAT_VERSION, check_state, read_counters
from sema.schedules import check_choice, check_nonnegative_int, check_positive_int
from sema.settings import epochs_to_steps, recipe_field


T_ORIGINS = ("burnin", "start")

# preset -> (update_every, t_origin); see the module docstring.
PRESETS: dict[str, tuple[int, str]] = {"sema": (1, "burnin"), "trl": (400, "start")}


def _check_number(name: str, value: float, low: float, low_open: bool = False, high: float | None = None) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and (high is None or value <= high)
    if not ok:
        rng = f"{'(' if low_open else '['}{low}, {'inf)' if high is None else f'{high}]'}"
        raise ValueError(f"{name}={value!r} is outside the allowed range {rng}")
    return float(value)


@dataclass
class BEMASettings:
    """BEMA's settings in epochs (see `sema.settings`). kwargs: every field as it is, except
    burnin_steps = round(burnin_epochs * steps_per_epoch)."""

    ema_power: float = 0.5  # kappa: beta_t = (lag + multiplier t)^-ema_power
    bias_power: float = 0.2  # eta: alpha_t = (lag + multiplier t)^-bias_power
    lag: float = 10.0  # rho
    multiplier: float = 1.0  # gamma
    beta_min: float = 0.0  # floor of beta_t
    burnin_epochs: Optional[float] = recipe_field("tail_start")  # tau in epochs (-> burnin_steps); theta_0 is the
    #                                                                weights after it; None (outside a recipe) = 0
    update_every: int = 1  # update on every k-th optimizer step
    buffers: str = "ignore"  # the model's BatchNorm statistics (bias-corrected running variances can go negative)

    def kwargs(self, steps_per_epoch: int) -> dict[str, Any]:
        return {"ema_power": self.ema_power, "bias_power": self.bias_power, "lag": self.lag,
                "multiplier": self.multiplier, "beta_min": self.beta_min,
                "burnin_steps": epochs_to_steps("burnin_epochs", self.burnin_epochs, steps_per_epoch) or 0,
                "update_every": self.update_every, "buffers": self.buffers}


class BEMA:
    """Bias-corrected EMA (see the module docstring for the exact formula and defaults).

    Args:
        model: the trained model (DDP / compiled models are unwrapped). Must have parameters.
        ema_power: kappa >= 0, the EMA weight's decay exponent. Default 0.5.
        bias_power: eta >= 0, the correction's decay exponent. Default 0.2.
        lag: rho >= 1, the schedules' offset (a virtual age at the snapshot; >= 1 keeps beta_t <= 1). Default 10.
        multiplier: gamma > 0, the schedules' time scale. Default 1.
        beta_min: floor of beta_t in [0, 1]. Default 0.
        burnin_steps: tau >= 0, the burn-in in update() calls; theta_0 is the weights after it. Default 0.
        update_every: phi >= 1, update the EMA on every phi-th update() call after the burn-in. None: the
            preset's (1; "trl": 400).
        t_origin: the clock of beta_t and alpha_t: "burnin" (t = n - tau) or "start" (t = n, TRL's global step).
            None: the preset's ("burnin"; "trl": "start").
        preset: "sema" (default) or "trl" (TRL's BEMACallback), see the module docstring.
        buffers: "ignore" (default: the model's own buffers), "copy", "average" (corrected like the weights).
        average_dtype, device: as in `sema.EMA` (float32 by default, next to the model).
    """

    Settings: ClassVar[type] = BEMASettings  # the settings in epochs a recipe gives (sema.settings)
    writes_model: ClassVar[bool] = False  # passive: never writes into the bound model (trajectories can be shared)

    def __init__(
        self,
        model: nn.Module,
        ema_power: float = 0.5,
        bias_power: float = 0.2,
        *,
        lag: float = 10.0,
        multiplier: float = 1.0,
        beta_min: float = 0.0,
        burnin_steps: int = 0,
        update_every: int | None = None,
        t_origin: str | None = None,
        preset: str = "sema",
        buffers: str = "ignore",
        average_dtype: torch.dtype | str | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        self.preset = check_choice("preset", preset, tuple(PRESETS))
        preset_every, preset_origin = PRESETS[preset]
        update_every = preset_every if update_every is None else update_every
        self.t_origin = check_choice("t_origin", preset_origin if t_origin is None else t_origin, T_ORIGINS)
        self.ema_power = _check_number("ema_power", ema_power, 0.0)
        self.bias_power = _check_number("bias_power", bias_power, 0.0)
        self.lag = _check_number("lag", lag, 1.0)
        self.multiplier = _check_number("multiplier", multiplier, 0.0, low_open=True)
        self.beta_min = _check_number("beta_min", beta_min, 0.0, high=1.0)
        self.burnin_steps = check_nonnegative_int("burnin_steps", burnin_steps)
        self.update_every = check_positive_int("update_every", update_every)
        self.buffers = check_choice("buffers", buffers, BUFFER_POLICIES)
        self.average_dtype = resolve_dtype(average_dtype)
        self.device = None if device is None else torch.device(device)
        average = make_average(model, self.average_dtype, self.device)  # holds mu when read
        self._plan = TensorPlan(model, average, buffers=buffers, follow_device=self.device is None)
        self._ema = GroupedState(self._plan, "model")
        self._theta0 = GroupedState(self._plan, "model")
        self._step = 0  # update() calls (n)
        self._epoch = 0  # epoch_end() calls
        self._t = 0  # t of the latest EMA update (of the snapshot before the first one)
        self._global_clock = self.t_origin == "start"
        self.started = self.burnin_steps == 0  # theta_0 taken

    @property
    def step(self) -> int:
        return self._step

    @property
    def epoch(self) -> int:
        return self._epoch

    def beta(self, t: int) -> float:
        """beta_t, the EMA's weight on the new weights at time t >= 1."""
        return max((self.lag + self.multiplier * t) ** -self.ema_power, self.beta_min)

    def alpha(self, t: int) -> float:
        """alpha_t, the weight of the correction theta - theta_0 at time t >= 0."""
        return (self.lag + self.multiplier * t) ** -self.bias_power

    def config(self) -> dict[str, Any]:
        return {"ema_power": self.ema_power, "bias_power": self.bias_power, "lag": self.lag,
                "multiplier": self.multiplier, "beta_min": self.beta_min, "burnin_steps": self.burnin_steps,
                "update_every": self.update_every, "t_origin": self.t_origin, "preset": self.preset,
                "buffers": self.buffers,
                "average_dtype": None if self.average_dtype is None else str(self.average_dtype)}

    # ------------------------------------------------------------------ the protocol
    def update(self) -> None:
        """Snapshot at the end of the burn-in, then one foreach lerp per tensor group. No device synchronisation."""
        self._step += 1
        if self._step == 1:
            self._plan.check()
        since = self._step - self.burnin_steps
        if since == 0:
            self._snapshot()
            return
        if since < 0 or since % self.update_every:
            return
        t = self._t = self._step if self._global_clock else since
        sync_plan(self._plan)
        self._plan.lerp_(self.beta(t), self._ema.lists())

    def _snapshot(self) -> None:
        sync_plan(self._plan)
        self._plan.copy_from_model(self._theta0.lists())
        self._plan.copy_from_model(self._ema.lists())
        self._t = self._step if self._global_clock else 0
        self.started = True

    def _refresh(self) -> None:
        """mu = alpha_t * (theta - theta_0) + EMA into the average module (four foreach kernels per group)."""
        self._plan.check()
        if not self.started:
            self._plan.copy_from_model()
            return
        alpha = self.alpha(self._t)
        ema, theta0 = self._ema.lists(), self._theta0.lists()
        with torch.no_grad():  # (the check above caught a reshaped model: these kernels see matching shapes)
            for gi, g in enumerate(self._plan.groups):
                torch._foreach_copy_(g.average, g.model)  # casts a bf16 model's weights to the float32 average
                if g.kind == "copy":
                    continue
                torch._foreach_sub_(g.average, theta0[gi])
                torch._foreach_mul_(g.average, alpha)
                torch._foreach_add_(g.average, ema[gi])

    @property
    def average(self) -> nn.Module:
        self._refresh()
        return self._plan.average_module()

    def epoch_end(self) -> bool:
        self._epoch += 1
        self._plan.check()
        return False

    def copy_to(self, model: nn.Module | None = None) -> None:
        self._refresh()
        self._plan.copy_to(model)

    def swapped(self) -> AbstractContextManager[nn.Module]:
        self._refresh()
        return self._plan.swapped()

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """EMA, theta_0 (by canonical name) and the counters; mu is recomputed from them when read."""
        self._plan.check()
        return {"format": "sema", "version": FORMAT_VERSION, "method": "BEMA", "config": self.config(),
                "step": self._step, "epoch": self._epoch, "t": self._t, "started": self.started,
                "ema": self._ema.state(), "theta0": self._theta0.state()}

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        """Restore a state_dict(); ValueError naming every mismatch (see `sema.EMA.load_state_dict`). A refused
        state changes nothing."""
        check_state(state, "BEMA", self.config(), strict, keys=("step", "epoch", "t", "started", "ema", "theta0"))
        step, epoch, t = read_counters(state, "step", "epoch", "t")
        started = state["started"]
        if isinstance(started, torch.Tensor) and started.numel() == 1:
            started = started.item()
        if started not in (True, False):  # (0 and 1 too)
            raise ValueError(f"state_dict['started']={state['started']!r} must be True or False")
        self._plan.check()
        ema = self._ema.validate(state["ema"], "the saved BEMA ema")
        theta0 = self._theta0.validate(state["theta0"], "the saved BEMA theta0")
        self._ema.assign(ema)
        self._theta0.assign(theta0)
        self._step, self._epoch, self._t = step, epoch, t
        self.started = bool(started)

    def __repr__(self) -> str:
        return f"BEMA({', '.join(f'{k}={v!r}' for k, v in self.config().items())}, step={self._step})"
