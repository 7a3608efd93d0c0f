"""EMA: an exponential moving average of a model's weights, kept in float32, updated with one foreach kernel.

    avg <- decay_t * avg + (1 - decay_t) * weights        after every update_every-th update() call

`decay_t` is `decay` after the optional warm-up (`sema.schedules`, exact formulas there). The average starts as
a copy of the model at binding time; with `first_update_copies=True` (preset "keras") the first averaging update
uses decay 0 instead, `avg <- weights`, so the average is the weights after that step whatever they were at
binding (Keras' `use_ema`, timm's ModelEmaV3). It lives in a module of the model's architecture (`.average`), in
float32 unless `average_dtype` says otherwise (a bf16 model's small updates would otherwise be rounded away), on the
model's device unless `device` says otherwise.
"""

from __future__ import annotations

import numbers
from contextlib import AbstractContextManager
from dataclasses import dataclass
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Optional

import torch
from torch import nn

from sema._binding import TensorPlan, make_average, resolve_dtype, unwrap
from sema.bn import check_bn_update_batches
from sema.presets import resolve_preset
from sema.schedules import DecaySchedule, check_choice, check_positive_int
from sema.settings import epochs_to_steps, recipe_field

FORMAT_VERSION = 1  # bump when state_dict's layout changes; load_state_dict names the versions it reads

BUFFER_POLICIES = ("average", "copy", "ignore")


def check_state(
    state: dict[str, Any], method: str, config: dict[str, Any], strict: bool = True, keys: tuple[str, ...] = ()
) -> None:
    """ValueError unless `state` is a sema state_dict of this format version and this method, holding every entry
    in `keys` (the method's counters and tensor sections) and saved (when `strict`) with the same configuration
    `config`; every method's load_state_dict starts with this."""
    if not isinstance(state, dict) or state.get("format") != "sema":
        raise ValueError("not a sema state_dict: expected a dict with format='sema' (from .state_dict())")
    if state.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"state_dict format version {state.get('version')!r} is not supported; this sema reads version "
            f"{FORMAT_VERSION}"
        )
    if state.get("method") != method:
        raise ValueError(f"state_dict was saved by method {state.get('method')!r}; this object is {method!r}")
    valid = ("format", "version", "method", "config", *keys)
    missing = [k for k in valid if k not in state]
    if missing:
        raise ValueError(
            f"{method} state_dict is missing {missing}: a valid one (from {method}.state_dict()) has the keys "
            f"{list(valid)}"
        )
    if not isinstance(state["config"], dict):
        raise ValueError(f"state_dict['config'] must be a dict of settings, got {type(state['config']).__name__}")
    diffs = config_mismatches(state["config"], config) if strict else ""
    if diffs:
        raise ValueError(f"state_dict was saved with a different configuration: {diffs} (strict=False loads anyway)")


def read_counters(state: dict[str, Any], *names: str) -> tuple[int, ...]:
    """The integer counters `names` of a state_dict (already checked present by check_state); ValueError naming the
    first one that is not an integer >= 0. Read them before loading any tensor, so a bad state changes nothing."""
    out = []
    for name in names:
        value = state[name]
        if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
            value = value.item()  # a counter that went through a tensor-only checkpoint format
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
            raise ValueError(f"state_dict[{name!r}]={value!r} is not a counter: expected an integer >= 0")
        out.append(int(value))
    return tuple(out)


# Configuration entries added after format version 1 was first written, with the value that reproduces what a
# state_dict saved without them did: such a state_dict still loads with strict=True.
ADDED_CONFIG = {"first_update_copies": False, "t_origin": "burnin", "preset": "sema", "bn_update_batches": None}


def config_mismatches(saved: dict[str, Any], current: dict[str, Any]) -> str:
    if saved.get("warmup_steps") == 0 and "warmup" in saved:  # written before config() said "none" for no warm-up
        saved = {**saved, "warmup": "none"}
    saved = {**{k: v for k, v in ADDED_CONFIG.items() if k in current}, **saved}
    diffs = [f"{k}: saved {saved.get(k)!r}, current {current.get(k)!r}" for k in sorted(set(saved) | set(current))
             if saved.get(k) != current.get(k)]
    return "; ".join(diffs)


@dataclass
class EMASettings:
    """EMA's settings in epochs (see `sema.settings`); `kwargs()` gives `EMA(model, **kwargs)`.

    kwargs: decay, warmup, warmup_steps = round(warmup_epochs * steps_per_epoch), warmup_ratio, warmup_power,
    warmup_gamma, update_every, buffers, preset: every field, passed as it is, except the one conversion.
    """

    decay: Optional[float] = recipe_field("decay")  # weight on the old average, (0, 1); None = the preset's
    warmup_epochs: Optional[float] = recipe_field("warmup_epochs")  # decay warm-up length (-> warmup_steps)
    warmup: Optional[str] = None  # linear | exp | power | mmdet_linear | mmdet_exp | none; None = the preset's
    warmup_ratio: float = 0.9  # linear/exp warm-up: decay_0 = warmup_ratio * decay
    warmup_power: float = 2 / 3  # power warm-up: exponent
    warmup_gamma: Optional[float] = None  # power warm-up: inverse gamma; None = reach the decay at the warm-up end
    update_every: int = 1  # fold the weights in on every k-th optimizer step
    buffers: Optional[str] = None  # average | copy | ignore (BatchNorm statistics); None = the preset's
    preset: str = "paper"  # paper | openmixup | mmdet | keras: the official variants' defaults (sema.presets)
    bn_update_batches: Optional[int] = None  # recompute the average's BatchNorm statistics from this many training
    #                                          batches before each evaluation (SWA's way); None = keep them

    def kwargs(self, steps_per_epoch: int) -> dict[str, Any]:
        return {"decay": self.decay, "warmup": self.warmup,
                "warmup_steps": epochs_to_steps("warmup_epochs", self.warmup_epochs, steps_per_epoch) or 0,
                "warmup_ratio": self.warmup_ratio, "warmup_power": self.warmup_power,
                "warmup_gamma": self.warmup_gamma, "update_every": self.update_every, "buffers": self.buffers,
                "preset": self.preset, "bn_update_batches": self.bn_update_batches}


class EMA:
    """Exponential moving average of a model's parameters (and buffers, per `buffers`).

    Args:
        model: the trained model; DDP-wrapped and torch.compile'd models are unwrapped. Must have parameters.
        decay: weight on the old average, in (0, 1). None: the preset's (0.999; "mmdet": 0.9998).
        update_every: fold the weights in on every k-th `update()` call only (integer >= 1).
        warmup_steps: T, the decay warm-up length in `update()` calls; 0 = no warm-up (default).
        warmup: "linear" (official SEMA/openmixup), "exp", "power" (timm/ema-pytorch inverse gamma),
            "mmdet_linear", "mmdet_exp", "none"; None: the preset's. Formulas: `sema.schedules`.
        warmup_ratio: "linear"/"exp": decay_0 = warmup_ratio * decay. Default 0.9 (official code).
        warmup_power, warmup_gamma: "power" schedule exponent and inverse gamma (None: reach `decay` at T).
        buffers: "average" (floating buffers averaged, integer ones copied), "copy" (copied from the model at each
            update), "ignore" (not tracked; the average is evaluated with the model's buffers). None: the preset's.
        preset: "paper" (default), "openmixup", "mmdet", "keras": the official variants and Keras 3's optimizer
            EMA, see `sema.presets`.
        momentum: preset="mmdet" only: mmdet's weight on the new weights; decay = 1 - momentum.
        first_update_copies: True: the first averaging update is `avg <- weights` (decay 0 once; Keras, timm).
            None: the preset's (True for "keras" only).
        bn_update_batches: `prepare_for_eval` recomputes the average's BatchNorm statistics from this many training
            batches before each evaluation (as SWA does). They stay in the average, which the following updates
            fold the model's statistics into, and which SEMA's later switches write into the model. None
            (default): the statistics `buffers` gives.
        average_dtype: dtype of the floating averaged tensors; None = float32 (float64 stays float64).
        device: where the average lives; None = next to each model tensor (and follows `model.to(...)`).

    Counters: `step` (update() calls so far), `epoch` (epoch_end() calls so far), `updates` (averaging updates).
    """

    Settings: ClassVar[type] = EMASettings  # the settings in epochs a recipe gives (sema.settings)
    writes_model: ClassVar[bool] = False  # passive: never writes into the bound model (trajectories can be shared)

    def __init__(
        self,
        model: nn.Module,
        decay: float | None = None,
        *,
        update_every: int = 1,
        warmup_steps: int = 0,
        warmup: str | None = None,
        warmup_ratio: float = 0.9,
        warmup_power: float = 2 / 3,
        warmup_gamma: float | None = None,
        buffers: str | None = None,
        preset: str = "paper",
        momentum: float | None = None,
        first_update_copies: bool | None = None,
        bn_update_batches: int | None = None,
        average_dtype: torch.dtype | str | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        resolved = resolve_preset(preset, decay, buffers, warmup, momentum, first_update_copies)
        decay, buffers, warmup = resolved.decay, resolved.buffers, resolved.warmup
        check_choice("buffers", buffers, BUFFER_POLICIES)
        self.bn_update_batches = check_bn_update_batches(bn_update_batches, buffers)
        self.first_update_copies = resolved.first_update_copies
        self.update_every = check_positive_int("update_every", update_every)
        self.schedule = DecaySchedule(decay, warmup, warmup_steps, warmup_ratio, warmup_power, warmup_gamma)
        self.preset = preset
        self.buffers = buffers
        self.average_dtype = resolve_dtype(average_dtype)
        self.device = None if device is None else torch.device(device)
        module = unwrap(model)
        if not any(True for _ in module.parameters()):
            raise ValueError(f"model={type(module).__name__} has no parameters; a weight average needs at least one")
        average = make_average(module, self.average_dtype, self.device)
        self._plan = TensorPlan(model, average, buffers=buffers, follow_device=self.device is None)
        # Past the warm-up the decay is constant: keep the lerp weight ready so update() computes nothing.
        self._steady_weight = 1.0 - self.schedule.decay
        # update() calls numbered <= _warm_until use the schedule ("mmdet_exp" never becomes constant).
        self._warm_until = float("inf") if self.schedule.warmup == "mmdet_exp" and warmup_steps else warmup_steps
        self._step = 0
        self._epoch = 0
        self._updates = 0

    # ------------------------------------------------------------------ counters and config
    @property
    def step(self) -> int:
        """Number of update() calls so far."""
        return self._step

    @property
    def epoch(self) -> int:
        """Number of epoch_end() calls so far."""
        return self._epoch

    @property
    def updates(self) -> int:
        """Number of averaging updates done (update() calls not skipped by update_every)."""
        return self._updates

    @property
    def decay(self) -> float:
        """The decay the next update() will use."""
        return self.schedule(self._step)

    def config(self) -> dict[str, Any]:
        """The configuration (saved in state_dict and checked on load)."""
        s = self.schedule
        return {  # "warmup": the shape, or "none" when there is no warm-up (0 steps)
            "decay": s.decay, "update_every": self.update_every, "warmup": s.warmup if s.warmup_steps else "none",
            "warmup_steps": s.warmup_steps, "warmup_ratio": s.warmup_ratio, "warmup_power": s.warmup_power,
            "warmup_gamma": s.warmup_gamma, "buffers": self.buffers, "preset": self.preset,
            "first_update_copies": self.first_update_copies, "bn_update_batches": self.bn_update_batches,
            "average_dtype": None if self.average_dtype is None else str(self.average_dtype),
        }

    # ------------------------------------------------------------------ the protocol
    @property
    def average(self) -> nn.Module:
        """A module of the model's architecture holding the averaged weights (eval mode, no grad)."""
        return self._plan.average_module()

    def update(self) -> None:
        """Fold the model's current weights in (call after every optimizer.step()). No device synchronisation."""
        step = self._step = self._step + 1
        if step == 1:
            self._plan.check()  # the model may have changed between binding and training
        if step % self.update_every:
            return
        if self._updates == 0 and self.first_update_copies:  # avg <- weights, exactly (lerp with weight 1)
            self._plan.lerp_(1.0)
        elif step > self._warm_until:  # past the warm-up: the decay is a constant
            self._plan.lerp_(self._steady_weight)
        else:
            self._plan.lerp_(1.0 - self.schedule(step - 1))
        self._updates += 1

    def prepare_for_eval(self, batches: Iterable[Any], forward: Callable[[Any], Any]) -> None:
        """With `bn_update_batches`: recompute the average's BatchNorm statistics from the first
        `bn_update_batches` of `batches` (`sema.bn.recompute_average_bn`); otherwise nothing."""
        if self.bn_update_batches is not None:
            from sema.bn import recompute_average_bn

            recompute_average_bn(self._plan, self.average, batches, forward, self.bn_update_batches)

    def epoch_end(self) -> bool:
        """Mark the end of an epoch. EMA never writes into the model: returns False."""
        self._epoch += 1
        self._plan.check()
        return False

    def copy_to(self, model: nn.Module | None = None) -> None:
        """Write the average into `model` (default: the bound model); buffers per the policy."""
        self._plan.copy_to(model)

    def swapped(self) -> AbstractContextManager[nn.Module]:
        """`with ema.swapped(): evaluate(model)`: inside, the bound model holds the average; on exit (also on an
        exception) its own weights, bit for bit. update()/state_dict() are refused inside."""
        return self._plan.swapped()

    # ------------------------------------------------------------------ checkpoints
    def _counters(self) -> dict[str, int]:
        return {"step": self._step, "epoch": self._epoch, "updates": self._updates}

    def _load_counters(self, counters: dict[str, int]) -> None:
        self._step, self._epoch, self._updates = counters["step"], counters["epoch"], counters["updates"]

    def state_dict(self) -> dict[str, Any]:
        """{"format": "sema", "version", "method", "config", counters..., "average": {name: tensor}}. Plain
        types and tensors only, so `torch.load(weights_only=True)` reads it. Tensors are references: save (or
        clone) them before training on."""
        self._plan.check()
        return {
            "format": "sema",
            "version": FORMAT_VERSION,
            "method": type(self).__name__,
            "config": self.config(),
            **self._counters(),
            "average": self._plan.average_state(),
        }

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        """Restore a state_dict(): the average and the counters, so training continues bit for bit. Raises
        ValueError naming every mismatch: format/version/method, missing entries, tensor names and shapes,
        non-finite averaged values, and (strict=True) any configuration difference. A refused state changes
        nothing."""
        names = tuple(self._counters())
        check_state(state, type(self).__name__, self.config(), strict, keys=(*names, "average"))
        counters = dict(zip(names, read_counters(state, *names)))
        self._plan.check()
        self._plan.load_average_state(state["average"])
        self._load_counters(counters)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.config().items())}, step={self._step})"
