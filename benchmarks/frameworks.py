"""Framework runners: the plug-in point for training a task through another framework's own loop.

    sema-bench recipe=quick/detection task.framework=mmdet method=sema       # mmdet's Runner + the sema hook

`task.framework=torchvision` (every task's default) trains in the engine's loop. Any other value names a runner
registered in `RUNNERS`: the engine validates the config as for every run (benchmarks.config.validate), checks
the rerun rules (skip / resume / refuse another config), then calls `check_options(cfg)` and the runner's
`run(cfg, run_dir) -> result` instead of its own loop. A runner writes the same result.json (benchmarks.results
schema), resumes from its own checkpoint (benchmarks.checkpoint.FRAMEWORK_CHECKPOINT_FILE) and builds the WA
method from the same keyword arguments (benchmarks.methods.method_kwargs).

A runner module defines:

    TASK: str                    the task it trains (a benchmarks.tasks.TASKS key)
    HONOURED: frozenset[str]     the trainer.* options it follows; every other trainer option must keep its
                                 default, or `check_options` refuses the run naming the option
    ACCEPTED: dict[str, tuple]   (optional) trainer.* options it follows only for some values: those values
    run(cfg, run_dir) -> dict    train, evaluate, write result.json; return it
"""

from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType
from typing import Any

ENGINE = "torchvision"  # the engine's own loop

# task.framework value -> runner module. One line per runner.
RUNNERS: dict[str, str] = {
    "mmdet": "benchmarks.openmmlab.mmdet_runner",
    "mmseg": "benchmarks.openmmlab.mmseg_runner",
}


def framework_of(cfg: Any) -> str:
    """The run's framework: task.framework where the task has the field, else the engine's loop."""
    return cfg.task.get("framework", ENGINE) if hasattr(cfg.task, "get") else getattr(cfg.task, "framework", ENGINE)


def load_runner(cfg: Any) -> ModuleType:
    """The runner module of `cfg`'s framework, with the task it trains checked."""
    name = framework_of(cfg)
    if name not in RUNNERS:
        raise ValueError(f"task.framework={name!r} is not allowed; choose one of: {ENGINE}, {', '.join(RUNNERS)}")
    runner = importlib.import_module(RUNNERS[name])
    if runner.TASK != cfg.task.name:
        raise ValueError(f"task.framework={name} trains task {runner.TASK!r}, not {cfg.task.name!r}")
    return runner


def check_options(cfg: Any, runner: ModuleType) -> None:
    """Refuse trainer options the runner does not follow when they differ from their defaults."""
    from benchmarks.config import TrainerConfig

    name = framework_of(cfg)
    accepted = getattr(runner, "ACCEPTED", {})
    for f in dataclasses.fields(TrainerConfig):
        if f.name in runner.HONOURED:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        value = cfg.trainer[f.name]
        if f.name in accepted:
            if value not in accepted[f.name]:
                raise ValueError(f"task.framework={name} does not honour trainer.{f.name}={value!r}; it accepts "
                                 f"{', '.join(map(repr, accepted[f.name]))}, or use task.framework={ENGINE}")
            continue
        if value != default:
            raise ValueError(
                f"task.framework={name} does not honour trainer.{f.name}={value!r} (it trains through the "
                f"framework's own Runner); leave it at its default {default!r}, or use task.framework={ENGINE}. "
                f"Honoured: {', '.join('trainer.' + k for k in sorted(runner.HONOURED))}")


def run(cfg: Any, run_dir: Any, world_size: int = 1) -> dict:
    """Train the run through its framework runner (after the engine's validation and rerun checks). The runners
    train in one process; under torchrun/Slurm with more they refuse (they have no distributed launcher here)."""
    runner = load_runner(cfg)
    check_options(cfg, runner)
    if world_size > 1:
        raise ValueError(f"task.framework={framework_of(cfg)} trains in one process; this job has {world_size} "
                         f"(torchrun/Slurm tasks): run it with one process, or use task.framework={ENGINE}")
    return runner.run(cfg, run_dir)
