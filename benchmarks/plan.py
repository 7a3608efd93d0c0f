"""See a run before it starts: the resolved config and what it implies.

    sema-bench --plan recipe=quick/classification method=sema        # prints the config, then the schedule

The schedule comes from the run's own objects, not from a second copy of the rules:

* steps per epoch: the task's training set, counted as the engine's loader does (`RunContext.steps_per_epoch`);
  building it needs the dataset, so on a machine without it the plan says so and shows the rest;
* the method's keyword arguments at that length (`benchmarks.methods.method_kwargs`), hence the decay warm-up's
  last step (`warmup_steps`);
* the epochs and steps at which the method writes into the trained model (SEMA's switches, Lookahead's syncs):
  found by running the real method, built with those arguments, through the run's steps on a one-weight probe
  (the weight is set to a new value before every step; a method that writes into the model changes it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from omegaconf import OmegaConf
from torch import nn


@dataclass
class Schedule:
    """What a run's config implies, once its steps per epoch are known."""

    steps_per_epoch: int  # optimizer steps per epoch
    total_steps: int  # optimizer steps of the run
    lr_warmup_steps: int  # the learning rate's linear warm-up ends after this step
    method_kwargs: Optional[dict[str, Any]]  # what the method's constructor receives; None for the baseline
    writes_at_epoch_end: list[int] = field(default_factory=list)  # epochs after which it writes into the model
    writes_at_steps: list[int] = field(default_factory=list)  # steps (1-based) at which it writes into the model

    @property
    def decay_warmup_steps(self) -> Optional[int]:
        """The decay warm-up's length in steps, for the methods that have one."""
        return (self.method_kwargs or {}).get("warmup_steps")


def schedule(cfg: Any, steps_per_epoch: int) -> Schedule:
    """The schedule of `cfg` at `steps_per_epoch` (runs the method on a probe; see the module docstring)."""
    from benchmarks.methods import build_averager

    epochs = int(cfg.trainer.epochs)
    probe = nn.Linear(1, 1, bias=False)
    averager, kwargs = build_averager(cfg.method, probe, steps_per_epoch)
    out = Schedule(steps_per_epoch, steps_per_epoch * epochs, int(round(cfg.optim.warmup_epochs * steps_per_epoch)),
                   kwargs)
    if averager is None:
        return out
    step = 0
    with torch.no_grad():
        for epoch in range(1, epochs + 1):
            for _ in range(steps_per_epoch):
                step += 1
                probe.weight.fill_(float(step))
                averager.update()
                if probe.weight.item() != float(step):
                    out.writes_at_steps.append(step)
            if averager.epoch_end():
                out.writes_at_epoch_end.append(epoch)
    return out


def count_steps(cfg: Any) -> tuple[Optional[int], str]:
    """(steps per epoch, how they were counted), or (None, why not) when the training set cannot be built here."""
    from benchmarks.runtime import cache_dir
    from benchmarks.tasks import load_task
    from benchmarks.tasks.protocol import RunContext

    from benchmarks.frameworks import ENGINE, framework_of

    if framework_of(cfg) != ENGINE:
        return None, f"task.framework={framework_of(cfg)} counts its own steps"
    ctx = RunContext.of_run(cfg, torch.device("cpu"), cache_dir() / "plan")
    try:
        setup = load_task(cfg.task.name).setup(OmegaConf.to_object(cfg.task), ctx)
    except Exception as err:  # no dataset here, a missing extra, ...: show the rest of the plan anyway
        return None, f"the training set could not be built here ({type(err).__name__}: {err})"
    n = len(setup.train_set)
    cap = cfg.trainer.max_steps_per_epoch
    accum = cfg.trainer.grad_accum_steps
    how = (f"{n} training examples / batch {cfg.task.batch_size}" + (f" / {accum} micro-batches" if accum > 1 else "")
           + (f", capped at {cap}" if cap else "") + "; one process: under torchrun each rank sees 1/N")
    return ctx.steps_per_epoch(n), how


def _listing(values: list[int], limit: int = 12) -> str:
    if not values:
        return "never"
    if len(values) <= limit:
        return ", ".join(map(str, values))
    return ", ".join(map(str, values[:limit])) + f", ... ({len(values)} in all, the last {values[-1]})"


def describe(cfg: Any, run_dir: Any, steps_per_epoch: Optional[int] = None) -> str:
    """The text `sema-bench --plan` prints: the resolved config, then the schedule."""
    from benchmarks.config import validate

    validate(cfg)
    lines = [OmegaConf.to_yaml(cfg, resolve=True).rstrip(), "", "# plan", f"run directory: {run_dir}"]
    how = "given"
    if steps_per_epoch is None:
        steps_per_epoch, how = count_steps(cfg)
    if steps_per_epoch is None:
        lines.append(f"steps per epoch: unknown ({how})")
        return "\n".join(lines) + "\n"
    s = schedule(cfg, steps_per_epoch)
    lines += [f"steps per epoch: {s.steps_per_epoch} ({how})",
              f"total steps: {s.total_steps} ({cfg.trainer.epochs} epochs)",
              f"learning-rate warm-up: {s.lr_warmup_steps} steps, then {cfg.optim.schedule}"]
    if s.method_kwargs is None:
        lines.append(f"method: {cfg.method.name} (no averaging: the trained model is evaluated and reported)")
    else:
        lines.append(f"method: {cfg.method.name} = sema.METHODS[{cfg.method.averager!r}](model, **{s.method_kwargs})")
        if s.decay_warmup_steps is not None:
            end = s.decay_warmup_steps
            lines.append(f"decay warm-up ends after step {end} (epoch {end / s.steps_per_epoch:g})")
        lines.append(f"writes into the trained model after epochs: {_listing(s.writes_at_epoch_end)}")
        if s.writes_at_steps:
            lines.append(f"writes into the trained model at steps: {_listing(s.writes_at_steps)}")
    return "\n".join(lines) + "\n"
