"""Structured configs (typed dataclasses) for `sema-bench`, registered in Hydra's ConfigStore.

The YAML files under `configs/` fill these schemas; a key that is not in a schema, or a value of the wrong type,
is rejected by Hydra/OmegaConf before anything runs, and `validate()` rejects out-of-range values and unknown
choices with the list of allowed ones.

How the pieces are registered (see `benchmarks.recipes.register_configs`):

* the root schema `Config` as `base_config` (configs/config.yaml lists it first in its defaults);
* each task's `Config` as `schema/task/<name>` (a recipe attaches it with `- /schema/task/<name>@task`), found
  by iterating `benchmarks.tasks.TASKS`;
* each method's schema as `schema/method/<key>` and a ready `method/<key>` for methods without a file of their
  own, from `sema.METHODS` (benchmarks/methods.py).

A recipe (configs/recipe/<profile>/<name>.yaml, listed in benchmarks/recipes.py) fills task, optim, trainer,
averaging and profile; a method file fills method. No file writes into another's node:
`benchmarks.recipes.check_recipe_files` refuses a recipe that sets method.* (it names the key and the file).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING

# ---------------------------------------------------------------------------------------------------------------
# Allowed values of the enumerated string fields (checked by `validate`, listed in its error messages).
OPTIMIZERS = ("sgd", "adamw", "adam", "lars")
SCHEDULES = ("cosine", "constant", "multistep", "onecycle", "poly")
LR_SCALINGS = ("linear", "none")
AMP_MODES = ("auto", "off", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
STRATEGIES = ("ddp", "fsdp2")  # benchmarks/strategy.py
REPORTED = ("final", "best", "median_last")  # result.json statistics sema-report can compare
FSDP_DTYPES = ("bf16", "fp16", "fp32")
WANDB_MODES = ("offline", "online", "disabled")
PROFILES = ("smoke", "quick", "paper")


@dataclass
class AveragingConfig:
    """The recipe's averaging settings: the ones that depend on the run's length and the model family. Each is the
    default of the method field of the same meaning (`sema.settings.recipe_field`); a method file or the command
    line may set its own value instead (method.decay=..., method.switch_start=...)."""

    decay: float = 0.999  # EMA-type decay (weight on the old average): 0.999 for CNNs, 0.9999 for transformers
    warmup_epochs: float = 0.0  # length of the decay warm-up, in epochs (EMA, SEMA)
    switch_start: float = 0.0  # SEMA: no switch before the end of this epoch (the paper: 5, its warm-up length)
    tail_start: float = 0.0  # where averaging of the run's tail begins, in epochs: SWA's first average and BEMA's
    #                          snapshot theta_0 (Izmailov et al. start SWA at ~3/4 of the budget; the quick and paper
    #                          recipes set 0.75 x trainer.epochs; 0 = from the first step). In epochs, not a
    #                          fraction: a run made longer on the command line keeps this start


@dataclass
class OptimConfig:
    """Optimizer and learning-rate schedule (the schedule steps once per optimizer step)."""

    name: str = "sgd"  # sgd | adamw | adam | lars (timm's LARS: SGD with layer-wise trust ratios, eta 0.001, on
    #                    the groups with weight decay; the official BYOL configs, with decay_1d=false)
    lr: float = 0.1  # peak learning rate (after warm-up)
    momentum: float = 0.9  # SGD / LARS momentum
    nesterov: bool = False  # SGD Nesterov momentum
    weight_decay: float = 1e-4  # decoupled for adamw, L2 for sgd/adam
    decay_1d: bool = True  # weight decay also on 1-D parameters (norm weights, biases); false = none on them
    #                        (the official AdamW configs' parameter groups)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # Adam/AdamW betas
    schedule: str = "cosine"  # cosine | constant | multistep | onecycle (torch's OneCycleLR, cosine phases; its
    #                           momentum cycling is not applied) | poly (mmcv's PolyLR, to min_lr)
    warmup_epochs: float = 0.0  # linear learning-rate warm-up from 0, in epochs
    min_lr: float = 0.0  # cosine floor
    milestones: list[float] = field(default_factory=list)  # multistep: epochs where the lr is multiplied by gamma
    gamma: float = 0.1  # multistep factor
    poly_power: float = 0.9  # poly: lr = (lr - min_lr) (1 - progress) ** poly_power + min_lr (mmseg: 0.9)
    onecycle_pct: float = 0.3  # onecycle: fraction of the steps rising from lr / onecycle_div to lr
    onecycle_div: float = 25.0  # onecycle: the starting lr is lr / onecycle_div
    onecycle_final_div: float = 1e4  # onecycle: the final lr is lr / (onecycle_div x onecycle_final_div)
    reference_batch: Optional[int] = None  # the global batch (task.batch_size x processes) at which `lr` is the
    #                                        recipe's; null = task.batch_size (one process)
    lr_scaling: str = "linear"  # at another global batch: linear (lr x global / reference) | none (refuse to run)


@dataclass
class TrainerConfig:
    """The training loop."""

    epochs: int = 10  # number of epochs
    max_steps_per_epoch: Optional[int] = None  # cap on optimizer steps per epoch (smoke runs); null = whole loader
    grad_clip: Optional[float] = None  # clip the global gradient norm to this value; null = off
    amp: str = "auto"  # auto (bf16 on CUDA, off on CPU) | off | bf16 | fp16 (fp16 adds a GradScaler)
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda
    eval_every: int = 1  # evaluate every n epochs (the last epoch is always evaluated)
    median_of_last: int = 3  # result.json's median_last: the median of the last k evaluations (the CIFAR
    #                          recipes: 10, the statistic of openmixup's CIFAR tables)
    reported: str = "final"  # the statistic sema-report compares: final | best | median_last (the CIFAR recipes)
    deterministic: bool = True  # deterministic algorithms and seeded everything (bit-exact resume on CPU)
    checkpoint: bool = True  # save checkpoint.pt at every epoch end (needed to resume)
    checkpoint_every_steps: Optional[int] = None  # also inside an epoch, every n steps (long COCO/LM epochs);
    #                                               a resume continues mid-epoch bit for bit on the CPU
    compile: bool = False  # torch.compile the model (CUDA runs; tested on the CPU)
    channels_last: Optional[bool] = None  # models with 2-D convolutions in channels_last memory format (faster
    #                                       convolutions on GPUs); null = on CUDA when not deterministic
    data_on_device: Optional[bool] = None  # datasets that offer it (in-memory uint8 images) keep their pixels on
    #                                        the device and augment whole batches there, no loader; null = on CUDA
    strategy: str = "ddp"  # under torchrun: ddp (every rank holds the model) | fsdp2 (parameters, gradients,
    #                        optimizer state and the average sharded over the ranks; benchmarks/strategy.py)
    fsdp_param_dtype: Optional[str] = None  # fsdp2 mixed precision: gather and compute in this dtype (bf16),
    #                                          reduce gradients in float32; null = the parameters' dtype
    activation_checkpointing: bool = False  # recompute activations in backward (tasks that offer it: lm)
    grad_accum_steps: int = 1  # micro-batches of task.batch_size per optimizer step (and per WA update)
    checkpoint_in_background: bool = True  # checkpoints are copied to host memory, then written (atomically) by
    #                                        a background thread while training goes on
    num_threads: Optional[int] = None  # torch CPU threads; null = torch's default
    nan_check_every: int = 50  # check the loss for NaN/inf every n steps (and at every epoch end)
    drop_last: bool = True  # drop the last incomplete training batch (keeps steps/epoch and BN batches fixed)
    dist_timeout_min: float = 30.0  # torch.distributed timeout: the longest any collective or barrier waits


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

    task: Any = MISSING  # the task's own Config (a TaskConfig subclass), filled by the recipe
    method: Any = MISSING  # the method's Settings plus name/averager (benchmarks/methods.py), chosen by `method=`
    averaging: AveragingConfig = field(default_factory=AveragingConfig)  # the recipe's averaging defaults
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    profile: str = MISSING  # smoke | quick | paper (set by the recipe; its folder under configs/recipe/)
    seed: int = 0  # the run's seed (model init, data order, augmentation)
    out_dir: str = "runs"  # root of all run directories (see hydra.run.dir in configs/config.yaml)
    riders: list[str] = field(default_factory=list)  # passive methods trained on this run's trajectory, each in the
    #                  run directory `method=<name>` would use (benchmarks/riders.py), e.g. riders=[ema,swa,lawa]


def _check_choice(where: str, value: Any, allowed: tuple[str, ...], optional: bool = False) -> None:
    if optional and value is None:
        return
    if value not in allowed:
        raise ValueError(f"{where}={value!r} is not allowed; choose one of: {', '.join(allowed)}")


def tail_fields(averager: Any) -> list[str]:
    """The method's Settings fields that default to averaging.tail_start (SWA's start_epochs, BEMA's burnin_epochs)."""
    import dataclasses

    from benchmarks.methods import settings_class
    from sema.settings import RECIPE_KEY

    if averager is None:
        return []
    return [f.name for f in dataclasses.fields(settings_class(averager)) if f.metadata.get(RECIPE_KEY) == "tail_start"]


def _check_positive(where: str, value: Any, allow_zero: bool = False, optional: bool = False) -> None:
    if optional and value is None:
        return
    ok = value >= 0 if allow_zero else value > 0
    if not (isinstance(value, (int, float)) and math.isfinite(value) and ok):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{where}={value!r} is not allowed; it must be a finite number {bound}")


def validate(cfg: Any) -> None:
    """Reject unknown choices and out-of-range values in the engine-owned parts of a composed config.

    Task fields (dataset, model) are checked by the task's `setup`; method settings by building the method once
    on a one-layer model (`benchmarks.methods.check_method`: `sema` itself checks them, with the same kind of
    message), before any data is loaded.
    """
    from pathlib import Path

    from benchmarks.methods import check_method

    root = cfg.task.get("data_root") if hasattr(cfg.task, "get") else getattr(cfg.task, "data_root", None)
    if root is not None and not Path(str(root)).expanduser().exists():
        raise ValueError(f"task.data_root={root} does not exist; point it at the folder (or file) holding the "
                         "dataset (docs/data.md gives each layout), or leave it unset for the embedded default")

    _check_choice("profile", cfg.profile, PROFILES)
    o, t, a = cfg.optim, cfg.trainer, cfg.averaging
    _check_choice("optim.name", o.name, OPTIMIZERS)
    _check_choice("optim.schedule", o.schedule, SCHEDULES)
    _check_positive("optim.lr", o.lr)
    _check_positive("optim.weight_decay", o.weight_decay, allow_zero=True)
    _check_positive("optim.warmup_epochs", o.warmup_epochs, allow_zero=True)
    _check_positive("optim.min_lr", o.min_lr, allow_zero=True)
    if o.schedule == "onecycle":
        if o.warmup_epochs:
            raise ValueError(f"optim.warmup_epochs={o.warmup_epochs} with optim.schedule=onecycle: the one-cycle "
                             "schedule rises on its own (optim.onecycle_pct); set optim.warmup_epochs=0")
        if not 0 < o.onecycle_pct < 1 or o.onecycle_div < 1 or o.onecycle_final_div < 1:
            raise ValueError(f"optim.onecycle_pct={o.onecycle_pct} must be in (0, 1), optim.onecycle_div="
                             f"{o.onecycle_div} and optim.onecycle_final_div={o.onecycle_final_div} >= 1")
    _check_choice("optim.lr_scaling", o.lr_scaling, LR_SCALINGS)
    _check_positive("optim.reference_batch", o.reference_batch, optional=True)
    _check_positive("trainer.dist_timeout_min", t.dist_timeout_min)
    _check_positive("trainer.checkpoint_every_steps", t.checkpoint_every_steps, optional=True)
    _check_choice("trainer.amp", t.amp, AMP_MODES)
    _check_choice("trainer.device", t.device, DEVICES)
    _check_choice("trainer.strategy", t.strategy, STRATEGIES)
    _check_choice("trainer.fsdp_param_dtype", t.fsdp_param_dtype, FSDP_DTYPES, optional=True)
    _check_positive("trainer.grad_accum_steps", t.grad_accum_steps)
    _check_positive("trainer.epochs", t.epochs)
    _check_positive("trainer.eval_every", t.eval_every)
    _check_positive("trainer.median_of_last", t.median_of_last)
    _check_choice("trainer.reported", t.reported, REPORTED)
    _check_positive("trainer.nan_check_every", t.nan_check_every)
    _check_positive("trainer.max_steps_per_epoch", t.max_steps_per_epoch, optional=True)
    _check_positive("trainer.grad_clip", t.grad_clip, optional=True)
    _check_choice("logger.wandb.mode", cfg.logger.wandb.mode, WANDB_MODES)
    _check_positive("averaging.warmup_epochs", a.warmup_epochs, allow_zero=True)
    _check_positive("averaging.switch_start", a.switch_start, allow_zero=True)
    _check_positive("averaging.tail_start", a.tail_start, allow_zero=True)
    _check_positive("task.batch_size", cfg.task.batch_size)
    _check_positive("task.eval_batch_size", cfg.task.eval_batch_size)
    check_method(cfg.method)
    for key in tail_fields(cfg.method.get("averager")):  # a tail that starts at or after the end: nothing averaged
        start = cfg.method.get(key)
        if start is not None and start >= t.epochs:
            raise ValueError(
                f"method.{key}={start} is not before the run's end (trainer.epochs={t.epochs}), so "
                f"{cfg.method.name} would never average; it defaults to the recipe's averaging.tail_start: set "
                f"averaging.tail_start (or method.{key}) to a value in [0, {t.epochs})")
