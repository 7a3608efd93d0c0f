"""Decay warm-up schedules, and the argument checks every method shares.

`decay` is the weight on the old average: `avg <- decay_t * avg + (1 - decay_t) * weights`. Early in training the
weights move fast and an average that starts as a copy of the random initialisation lags behind, so the decay is
warmed up: small at first, `decay` after the warm-up. `t` is the number of `update()` calls *before* the current
one (0 for the first call, counted in calls whether or not `update_every` skips them, as the official hooks count
iterations), and `T = warmup_steps`. `warmup_steps=0` means no warm-up (`decay_t = decay`) for every kind.

    "none"          decay_t = decay
    "linear"        decay_t = decay * (1 - (1 - t/T) * (1 - warmup_ratio))          for t < T, else decay
                    (the official openmixup EMAHook / SEMA code; warmup_ratio=0.9 gives decay_0 = 0.9 * decay)
    "exp"           decay_t = decay * warmup_ratio ** (1 - t/T)                        for t < T, else decay
                    (openmixup's "exp" mode)
    "power"         decay_t = min(decay, max(0, 1 - (1 + t/gamma) ** -power))         for t < T, else decay
                    (the inverse-gamma schedule of timm ModelEmaV3 / ema-pytorch / diffusers, power=2/3 by
                    default). gamma defaults to T / ((1 - decay) ** (-1/power) - 1), which makes the curve reach
                    `decay` exactly at t = T, so T means "warm-up length" here too; pass `warmup_gamma` to set it.
    "mmdet_linear"  decay_t = min(decay, 1 - decay * (1 - t/T) * (1 - warmup_ratio))   (1 - mu_t of the SEMA
                    detection LinearMomentumSwitchEMAHook, mu_t = max(mu, (1 - mu)(1 - t/T)(1 - ratio)), mu = 1 - decay)
    "mmdet_exp"     decay_t = decay * (1 - exp(-(1 + t)/T))                             (1 - mu_t of the SEMA
                    detection ExpMomentumSwitchEMAHook, mu_t = (1 - mu) exp(-(1 + t)/T) + mu; YOLOX style; never
                    exactly `decay`, it approaches it)

Stable API (other method files use it): `DecaySchedule(...)` (frozen dataclass, call it with t), `WARMUPS`, and the
checks `check_open_unit`, `check_positive_int`, `check_nonnegative_int`, `check_choice`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

WARMUPS = ("none", "linear", "exp", "power", "mmdet_linear", "mmdet_exp")


def check_open_unit(name: str, value: float, *, closed_right: bool = False) -> float:
    """`value` is a real number in (0, 1) (or (0, 1] with closed_right); ValueError naming name/value/range."""
    hi = "1]" if closed_right else "1)"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value and (
        value <= 1 if closed_right else value < 1
    )
    if not ok:
        raise ValueError(f"{name}={value!r} is outside the allowed range (0, {hi}")
    return float(value)


def check_positive(name: str, value: float) -> float:
    """A finite number > 0 (a rate, a scale); ValueError naming the argument otherwise."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if not ok:
        raise ValueError(f"{name}={value!r} must be a finite number > 0")
    return float(value)


def check_positive_int(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}={value!r} must be an integer >= 1")
    return value


def check_nonnegative_int(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name}={value!r} must be an integer >= 0")
    return value


def check_choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; allowed: {', '.join(map(repr, allowed))}")
    return value


@dataclass(frozen=True)
class DecaySchedule:
    """The decay to use at update t (see the module docstring for the exact formulas)."""

    decay: float  # the target decay, in (0, 1): weight on the old average
    warmup: str = "linear"  # one of WARMUPS; only used when warmup_steps > 0
    warmup_steps: int = 0  # T: warm-up length in update() calls; 0 = no warm-up
    warmup_ratio: float = 0.9  # "linear"/"exp"/"mmdet_linear": decay_0 = ratio * decay (linear, exp)
    warmup_power: float = 2 / 3  # "power": exponent (timm/ema-pytorch default 2/3; 3/4 for short runs)
    warmup_gamma: float | None = None  # "power": inverse gamma; None = reach `decay` exactly at t = T

    def __post_init__(self) -> None:
        check_open_unit("decay", self.decay)
        check_choice("warmup", self.warmup, WARMUPS)
        check_nonnegative_int("warmup_steps", self.warmup_steps)
        check_open_unit("warmup_ratio", self.warmup_ratio, closed_right=True)
        if not (isinstance(self.warmup_power, (int, float)) and self.warmup_power > 0):
            raise ValueError(f"warmup_power={self.warmup_power!r} must be a number > 0")
        if self.warmup_gamma is not None and not (
            isinstance(self.warmup_gamma, (int, float)) and self.warmup_gamma > 0
        ):
            raise ValueError(f"warmup_gamma={self.warmup_gamma!r} must be None or a number > 0")

    @property
    def gamma(self) -> float:
        """The inverse gamma of the "power" schedule (derived from T unless given)."""
        if self.warmup_gamma is not None:
            return float(self.warmup_gamma)
        return self.warmup_steps / ((1 - self.decay) ** (-1 / self.warmup_power) - 1)

    def __call__(self, t: int) -> float:
        """decay_t for the update with t earlier update() calls (t = 0 for the first). Pure Python floats."""
        d, big_t, kind = self.decay, self.warmup_steps, self.warmup
        if big_t == 0 or kind == "none":
            return d
        if kind == "mmdet_exp":
            return d * (1 - math.exp(-(1 + t) / big_t))
        if t >= big_t:
            return d
        frac = t / big_t
        if kind == "linear":
            return d * (1 - (1 - frac) * (1 - self.warmup_ratio))
        if kind == "exp":
            return d * self.warmup_ratio ** (1 - frac)
        if kind == "power":
            return min(d, max(0.0, 1 - (1 + t / self.gamma) ** -self.warmup_power))
        # mmdet_linear
        return min(d, 1 - d * (1 - frac) * (1 - self.warmup_ratio))
