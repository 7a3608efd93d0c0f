"""Structured configs (typed dataclasses) for `sema-bench`, registered in Hydra's ConfigStore.

The YAML files under `configs/` fill these schemas; a key that is not in a schema, or a value of the wrong type,
is rejected by Hydra/OmegaConf before anything runs, and `validate()` rejects out-of-range values and unknown
choices with the list of allowed ones.

How the pieces are registered (see `register_configs`):

* the root schema `Config` as `base_config` (configs/config.yaml lists it first in its defaults);
* each task's `Config` as `task/<name>_schema`, found by iterating `benchmarks.tasks.TASKS`
  (configs/task/<name>.yaml starts with `defaults: [<name>_schema, _self_]`);
* each method schema in `METHOD_SCHEMAS` as `method/<key>` (configs/method/<name>.yaml starts with
  `defaults: [<key>, _self_]`, usually `method_schema`). A method with extra fields writes a dataclass that
  extends `MethodConfig` and adds one line to `METHOD_SCHEMAS`.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import II, MISSING

# ---------------------------------------------------------------------------------------------------------------
# Allowed values of the enumerated string fields (checked by `validate`, listed in its error messages).
OPTIMIZERS = ("sgd", "adamw", "adam")
SCHEDULES = ("cosine", "constant", "multistep")
AMP_MODES = ("auto", "off", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
SWITCH_UNITS = ("epoch", "step")
WANDB_MODES = ("offline", "online", "disabled")
PROFILES = ("smoke", "quick", "paper")


@dataclass
class MethodConfig:
    """A weight-averaging method: which `sema.METHODS` entry to build and with what arguments.

    `benchmarks.methods.build_averager` turns this into a `sema` object without looking at `name`:
    every field except `name`, `averager` and the `*_epochs` ones is passed to `sema.METHODS[averager](module, ...)`
    as a keyword argument, omitting None values (so sema's own defaults apply). Epoch-based fields are converted:
    a field `<x>_epochs` becomes the keyword `<x>_steps` (times the optimizer steps per epoch), and
    `switch_start`/`switch_end` (always given in epochs here) become steps when `switch_unit="step"`.
    When `switch_every` is None the method does not switch and no `switch_*` keyword is passed.
    Issue-6 style methods extend this dataclass with their own fields (they are passed the same way).
    """

    name: str = MISSING  # the method's label in results and run directories (baseline, ema, sema, ...)
    averager: Optional[str] = MISSING  # key in sema.METHODS to build; null = no averaging (the baseline)
    decay: Optional[float] = II("task.ema_decay")  # weight on the old average; default: the task's paper value
    warmup: Optional[str] = None  # decay warm-up: none | linear | exp | power | ...; null = the preset's
    warmup_epochs: Optional[float] = None  # decay warm-up length in epochs (-> warmup_steps); null = none
    warmup_ratio: Optional[float] = None  # linear warm-up starts at warmup_ratio * decay; null = sema's default
    update_every: Optional[int] = None  # update the average on every k-th optimizer step; null = every step
    buffers: Optional[str] = None  # average | copy | ignore (BatchNorm statistics etc.); null = the preset's
    switch_every: Optional[int] = None  # SEMA: copy the average into the model every k units; null = never
    switch_start: Optional[float] = None  # first switch only after this many epochs (converted for unit=step)
    switch_unit: Optional[str] = None  # epoch | step: the unit of switch_every
    switch_end: Optional[float] = None  # no switch after this many epochs; null = switch until the end
    preset: Optional[str] = None  # sema preset (paper | openmixup | mmdet); null = sema's default (paper)


# The comparison methods' own fields (issue 6). `decay` is null for those that have no decay; each field is passed
# to the sema class as the keyword of the same name. Sources of the defaults: configs/method/<name>.yaml headers.
@dataclass
class SEMABlendConfig(MethodConfig):
    """SEMA whose switch moves the model only part of the way to the average (sema.SEMA's switch_blend)."""

    switch_blend: Optional[float] = 0.5  # model <- model + switch_blend * (average - model) at each switch; (0, 1]


@dataclass
class SWAConfig(MethodConfig):
    """sema.SWA: the uniform mean of the weights from a start step, BatchNorm statistics re-estimated."""

    decay: Optional[float] = None  # SWA has no decay
    start_epochs: float = 0.0  # average only after this many epochs (-> start_steps); Izmailov: ~0.75 x epochs
    bn_update_batches: Optional[int] = None  # engine, not sema: before each evaluation of the average (and before
    #                                          average.safetensors is saved) re-estimate its BatchNorm statistics
    #                                          from up to this many training batches (sema.bn.update_bn); null = off


@dataclass
class LAWAConfig(MethodConfig):
    """sema.LAWA: the mean of the latest k snapshots."""

    decay: Optional[float] = None  # LAWA has no decay
    k: int = 5  # snapshots in the mean
    every: int = 1  # a snapshot every `every` units (after `start`)
    start: int = 0  # no snapshot at or before this epoch/step (burn-in)
    unit: str = "epoch"  # epoch (Kaddour 2022: one per epoch) | step (Sanyal 2023, Ajroldi 2025)


@dataclass
class BEMAConfig(MethodConfig):
    """sema.BEMA: bias-corrected EMA, mu = alpha_t (theta - theta_0) + EMA_t."""

    decay: Optional[float] = None  # BEMA's EMA weight follows beta_t = (lag + multiplier t)^-ema_power instead
    ema_power: float = 0.5  # kappa
    bias_power: float = 0.2  # eta
    lag: float = 10.0  # rho
    multiplier: float = 1.0  # gamma
    beta_min: float = 0.0  # floor of beta_t
    burnin_epochs: float = 0.0  # tau in epochs (-> burnin_steps); theta_0 is the weights after it


@dataclass
class PowerEMAConfig(MethodConfig):
    """sema.PowerEMA: Karras power-function EMA, decay_t = (1 - 1/t)^(gamma + 1)."""

    decay: Optional[float] = None  # the decay follows the power schedule instead
    sigma_rel: Optional[float] = 0.10  # the profile's relative width (converted to gamma); null when gamma is set
    gamma: Optional[float] = None  # the profile exponent; set sigma_rel to null to use it


@dataclass
class LookaheadConfig(MethodConfig):
    """sema.Lookahead: k fast steps, then slow <- slow + alpha (fast - slow); fast <- slow."""

    decay: Optional[float] = None  # Lookahead has no decay
    k: int = 5  # fast steps per sync
    alpha: float = 0.5  # slow-weights step size, (0, 1]


# Method schemas by ConfigStore name (group "method"). One line per dataclass that extends MethodConfig.
METHOD_SCHEMAS: dict[str, type] = {
    "method_schema": MethodConfig,
    "sema_blend_schema": SEMABlendConfig,
    "swa_schema": SWAConfig,
    "lawa_schema": LAWAConfig,
    "bema_schema": BEMAConfig,
    "power_ema_schema": PowerEMAConfig,
    "lookahead_schema": LookaheadConfig,
}


@dataclass
class OptimConfig:
    """Optimizer and learning-rate schedule (the schedule steps once per optimizer step)."""

    name: str = "sgd"  # sgd | adamw | adam
    lr: float = 0.1  # peak learning rate (after warm-up)
    momentum: float = 0.9  # SGD momentum
    nesterov: bool = False  # SGD Nesterov momentum
    weight_decay: float = 1e-4  # decoupled for adamw, L2 for sgd/adam
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # Adam/AdamW betas
    schedule: str = "cosine"  # cosine | constant | multistep
    warmup_epochs: float = 0.0  # linear learning-rate warm-up from 0, in epochs
    min_lr: float = 0.0  # cosine floor
    milestones: list[float] = field(default_factory=list)  # multistep: epochs where the lr is multiplied by gamma
    gamma: float = 0.1  # multistep factor


@dataclass
class TrainerConfig:
    """The training loop."""

    epochs: int = 10  # number of epochs
    max_steps_per_epoch: Optional[int] = None  # cap on optimizer steps per epoch (smoke runs); null = whole loader
    grad_clip: Optional[float] = None  # clip the global gradient norm to this value; null = off
    amp: str = "auto"  # auto (bf16 on CUDA, off on CPU) | off | bf16 | fp16 (fp16 adds a GradScaler)
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda
    eval_every: int = 1  # evaluate every n epochs (the last epoch is always evaluated)
    deterministic: bool = True  # deterministic algorithms and seeded everything (bit-exact resume on CPU)
    checkpoint: bool = True  # save checkpoint.pt at every epoch end (needed to resume)
    compile: bool = False  # torch.compile the model (CUDA runs)
    num_threads: Optional[int] = None  # torch CPU threads; null = torch's default
    nan_check_every: int = 50  # check the loss for NaN/inf every n steps (and at every epoch end)
    drop_last: bool = True  # drop the last incomplete training batch (keeps steps/epoch and BN batches fixed)


@dataclass
class WandbConfig:
    """Weights & Biases logging; offline by default so that it never needs a network."""

    mode: str = "offline"  # offline | online | disabled
    project: str = "sema-bench"  # wandb project
    entity: Optional[str] = None  # wandb entity (team/user); null = the default one
    group: str = "${task.name}/${profile}"  # runs compared together (the UI aggregates seeds per group)


@dataclass
class LoggerConfig:
    """Local logs (always written: log.jsonl and log.csv in the run directory) and wandb."""

    wandb: WandbConfig = field(default_factory=WandbConfig)
    progress: bool = True  # rich progress bars on the terminal (rank 0)


@dataclass
class Config:
    """The root config. Keys other tools rely on: trainer.epochs, logger.wandb.mode (see docs/ARCHITECTURE.md)."""

    task: Any = MISSING  # the task's own Config (a TaskConfig subclass), chosen by `task=<name>`
    method: Any = MISSING  # a MethodConfig (or subclass), chosen by `method=<name>`
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    profile: str = MISSING  # smoke | quick | paper (set by configs/profile/<name>.yaml)
    seed: int = 0  # the run's seed (model init, data order, augmentation)
    out_dir: str = "runs"  # root of all run directories (see hydra.run.dir in configs/config.yaml)


def register_configs() -> None:
    """Store every schema in Hydra's ConfigStore (idempotent; called before Hydra composes a config)."""
    from hydra.core.config_store import ConfigStore

    from benchmarks.tasks import TASKS

    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    for key, schema in METHOD_SCHEMAS.items():
        cs.store(group="method", name=key, node=schema)
    for name, module_path in TASKS.items():
        try:
            module = importlib.import_module(module_path)
        except ModuleNotFoundError as err:
            if err.name == module_path:  # the task is registered but not written yet: it cannot be chosen
                continue
            raise
        cs.store(group="task", name=f"{name}_schema", node=module.Config)


def _check_choice(where: str, value: Any, allowed: tuple[str, ...], optional: bool = False) -> None:
    if optional and value is None:
        return
    if value not in allowed:
        raise ValueError(f"{where}={value!r} is not allowed; choose one of: {', '.join(allowed)}")


def _check_positive(where: str, value: Any, allow_zero: bool = False, optional: bool = False) -> None:
    if optional and value is None:
        return
    ok = value >= 0 if allow_zero else value > 0
    if not (isinstance(value, (int, float)) and math.isfinite(value) and ok):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{where}={value!r} is not allowed; it must be a finite number {bound}")


def validate(cfg: Any) -> None:
    """Reject unknown choices and out-of-range values in the engine-owned parts of a composed config.

    Task fields (dataset, model) are checked by the task's `setup`; method arguments (warmup, buffers, preset,
    ...) by `sema` itself, with the same kind of message.
    """
    _check_choice("profile", cfg.profile, PROFILES)
    o, t, m = cfg.optim, cfg.trainer, cfg.method
    _check_choice("optim.name", o.name, OPTIMIZERS)
    _check_choice("optim.schedule", o.schedule, SCHEDULES)
    _check_positive("optim.lr", o.lr)
    _check_positive("optim.weight_decay", o.weight_decay, allow_zero=True)
    _check_positive("optim.warmup_epochs", o.warmup_epochs, allow_zero=True)
    _check_positive("optim.min_lr", o.min_lr, allow_zero=True)
    _check_choice("trainer.amp", t.amp, AMP_MODES)
    _check_choice("trainer.device", t.device, DEVICES)
    _check_positive("trainer.epochs", t.epochs)
    _check_positive("trainer.eval_every", t.eval_every)
    _check_positive("trainer.nan_check_every", t.nan_check_every)
    _check_positive("trainer.max_steps_per_epoch", t.max_steps_per_epoch, optional=True)
    _check_positive("trainer.grad_clip", t.grad_clip, optional=True)
    _check_choice("logger.wandb.mode", cfg.logger.wandb.mode, WANDB_MODES)
    _check_choice("method.switch_unit", m.switch_unit, SWITCH_UNITS, optional=True)
    _check_positive("method.warmup_epochs", m.warmup_epochs, allow_zero=True, optional=True)
    _check_positive("method.switch_start", m.switch_start, allow_zero=True, optional=True)
    _check_positive("task.batch_size", cfg.task.batch_size)
    _check_positive("task.eval_batch_size", cfg.task.eval_batch_size)
