"""`sema-bench`: the benchmark's command line (a Hydra app).

    sema-bench                                                        # the main job: the quick suite (suite.py)
    sema-bench recipe=quick/classification method=sema seed=0        # one run
    sema-bench -m recipe=quick/classification method=baseline,ema,sema seed=0,1,2   # a sweep
    sema-bench recipe=quick/classification method=baseline riders=[ema,swa]   # EMA and SWA on baseline's training
    sema-bench recipe=paper/cifar100_resnet50 task.data_root=/data method=sema     # a paper recipe
    sema-bench --list                                                 # recipes, methods, tasks
    sema-bench --plan recipe=quick/classification method=sema        # resolved config + schedule, no run
    torchrun --nproc_per_node=4 -m benchmarks.cli recipe=...          # data parallel (DDP)

What fills what, run directories, launchers (joblib, submitit local/Slurm): configs/config.yaml's header.
In a sweep a failed run is recorded (status "failed" in its result.json) and the sweep goes on; a single run
that fails exits with the error.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from benchmarks.recipes import CONFIG_DIR, register_configs

log = logging.getLogger("sema-bench")


def _progress(cfg: DictConfig):
    from benchmarks.engine import LogProgress

    if cfg.logger.progress and sys.stdout.isatty():
        from benchmarks.suite import RichProgress

        return RichProgress()
    return LogProgress()


SWEEP_FAILED: list[Path] = []  # result.json files of this process's sweep that ended "failed" (SweepFailures)


class SweepFailures(Callback):
    """Hydra callback (configs/config.yaml): at the end of a sweep, the runs whose result.json says "failed" and
    was written during the sweep go into SWEEP_FAILED; `main` then exits non-zero listing them (every job ran)."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self.started = time.time()

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        import json

        root = Path(str(config.hydra.sweep.dir))
        for path in sorted(root.rglob("result.json")) if root.is_dir() else []:
            try:
                if path.stat().st_mtime >= self.started and json.loads(path.read_text()).get("status") == "failed":
                    SWEEP_FAILED.append(path)
            except (OSError, ValueError):  # unreadable: sema-report lists it
                continue


class KeepSweepConfigs(Callback):
    """Hydra callback (configs/config.yaml): a sweep into an out_dir that already holds another sweep's
    multirun.yaml keeps that file as multirun.<its UTC time>.yaml instead of overwriting it (Hydra's sweeper writes
    multirun.yaml right after this hook)."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        import datetime
        import os

        previous = Path(str(config.hydra.sweep.dir)) / "multirun.yaml"
        if not previous.is_file():
            return
        when = datetime.datetime.fromtimestamp(previous.stat().st_mtime, datetime.timezone.utc)
        stamp = when.strftime("%Y%m%dT%H%M%S.%fZ")
        kept = previous.with_name(f"multirun.{stamp}.yaml")
        os.replace(previous, kept)
        log.info("kept the previous sweep's %s as %s", previous.name, kept.name)


# An absolute path: a relative one is resolved against the console script's location, not this file's.
@hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base="1.3")
def run_one(cfg: DictConfig) -> dict | None:
    """One Hydra job: train (or resume, or skip) the run in its Hydra output directory."""
    from benchmarks import engine

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    progress = _progress(cfg)
    try:
        with progress if hasattr(progress, "__enter__") else contextlib.nullcontext():
            if cfg.riders:  # passive methods on this run's trajectory, each in its own run directory
                results = engine.run_shared([(cfg, run_dir), *_riders(cfg, list(hydra_cfg.overrides.task))],
                                            progress=progress)
                failed = [r for r in results if r.get("status") == "failed"]
                if failed and hydra_cfg.mode != RunMode.MULTIRUN:
                    raise RuntimeError(f"{len(failed)} of {len(results)} shared runs failed: "
                                       + "; ".join(str(r.get("error", "")).strip().splitlines()[-1:][0]
                                                   for r in failed if r.get("error")))
                result = results[0]
            else:
                result = engine.run(cfg, run_dir, progress=progress)
    except Exception as err:
        if hydra_cfg.mode != RunMode.MULTIRUN:
            raise
        log.error("run in %s failed (recorded in its result.json); the sweep goes on: %s", run_dir, err)
        return None
    log.info("%s: %s; files in %s", result["method"], result["status"], run_dir)
    return result


def _riders(cfg: DictConfig, overrides: list[str]) -> list[tuple[DictConfig, Path]]:
    """(config, run directory) of each of cfg.riders, composed from this run's overrides with method=<rider>."""
    from benchmarks.recipes import compose

    from omegaconf import OmegaConf

    kept = [o for o in overrides if not o.lstrip("+~").startswith(("method=", "riders="))]
    riders = [compose([*kept, f"method={name}"]) for name in cfg.riders]
    for rider_cfg, rider_dir in riders:  # the composed config beside each rider's result, as Hydra does for a run
        (rider_dir / ".hydra").mkdir(parents=True, exist_ok=True)
        OmegaConf.save(rider_cfg, rider_dir / ".hydra" / "config.yaml")
    return riders


HELP = """sema-bench: Switch EMA and other weight-averaging methods, trained and compared.

  sema-bench                        the main job: every task's quick recipe x baseline, ema, sema (seed 0), then
                                    the comparison table (runs/quick/report/); rerun to resume
  sema-bench recipe=R method=M [seed=S] [key=value ...]      one run, in runs/<R>/<M>/seed<S>/[overrides]
  sema-bench recipe=R method=baseline riders=[ema,swa,lawa]  passive methods trained on one trajectory, each in
                                                             its own run directory (as method=<rider> would be)
  sema-bench -m recipe=R1,R2 method=M1,M2 seed=0,1,2 [...]   a sweep (hydra/launcher=joblib|submitit_local|slurm)
  sema-bench --plan recipe=R method=M [...]                  print the resolved config, the steps per epoch, the
                                                             method's arguments, warm-up end and switch epochs
  sema-bench --list                 the recipes, methods and tasks with one line each
  sema-bench --hydra-help           Hydra's own options (--cfg, --multirun, launchers, ...)

Choices (defaults: recipe=quick/classification method=sema seed=0 out_dir=runs):
  recipe=<profile>/<name>    {recipes}
  method=<name>              {methods}
  seed=<int>, out_dir=<dir>, and any key of the resolved config, e.g. optim.lr=0.05 trainer.epochs=20
  method.<setting>=<value>   a method's own settings (sema-bench --plan ... shows them), e.g. method.decay=0.9
  task.data_root=<dir>       the real dataset instead of the embedded offline default (docs/data.md)
"""


def _help() -> str:
    from benchmarks.methods import choices
    from benchmarks.recipes import RECIPES

    return HELP.format(recipes=" ".join(RECIPES), methods=" ".join(choices(CONFIG_DIR / "method")))


def _listing() -> str:
    import importlib

    from benchmarks.methods import choices
    from benchmarks.recipes import RECIPES
    from benchmarks.tasks import TASKS

    lines = ["recipes (recipe=<name>; configs/recipe/<name>.yaml):"]
    lines += [f"  {name:30s} {r.task:15s} {r.summary}" for name, r in RECIPES.items()]
    lines += ["", "methods (method=<name>; sema.METHODS, configs/method/):"]
    lines += [f"  {name:30s} {text}" for name, text in choices(CONFIG_DIR / "method").items()]
    lines += ["", "tasks (benchmarks/tasks/):"]
    for name, module_path in TASKS.items():
        doc = (importlib.import_module(module_path).__doc__ or "").strip().splitlines()
        lines.append(f"  {name:30s} {doc[0] if doc else ''}")
    return "\n".join(lines)


# The arguments of the former command line, each with what replaces it.
_FORMER = {"task=": "recipe=<profile>/<task>, e.g. recipe=quick/classification (sema-bench --list)",
           "profile=": "recipe=<profile>/<task>, e.g. recipe=smoke/classification (sema-bench --list)",
           "+experiment=": "recipe=paper/<name>, e.g. recipe=paper/cifar100_resnet50 (sema-bench --list)"}


def _check_former(args: list[str]) -> None:
    for arg in args:
        for former, now in _FORMER.items():
            if arg.startswith(former) or arg.startswith("-m" + former):
                raise SystemExit(f"sema-bench: {arg!r} is no longer an option; use {now}")


def _absolute_out_dir(args: list[str]) -> list[str]:
    """out_dir as an absolute path, resolved where the command was typed: a Slurm job, whatever its working
    directory, then writes into the same run directories (and a resubmitted sweep finds them)."""
    given = [a for a in args if a.startswith("out_dir=")]
    if not given:
        return [*args, f"out_dir={Path('runs').absolute()}"]
    def absolute(value: str) -> str:  # a sweep's list (a,b) item by item
        return ",".join(str(Path(v).expanduser().absolute()) for v in value.split(","))

    return [f"out_dir={absolute(a.split('=', 1)[1])}" if a.startswith("out_dir=") else a for a in args]


def _check_launcher(args: list[str]) -> None:
    """The Slurm launcher needs a partition: say so before sbatch does."""
    if "hydra/launcher=slurm" in args and not any(a.startswith("hydra.launcher.partition=") for a in args):
        raise SystemExit("sema-bench: hydra/launcher=slurm needs hydra.launcher.partition=<partition> (and "
                         "hydra.launcher.account=/qos= where your cluster requires them); see "
                         "configs/hydra/launcher/slurm.yaml for every key")


def main() -> None:
    """Console entry point: no arguments -> the main job; --help/--list/--plan; otherwise a Hydra run or sweep."""
    args = sys.argv[1:]
    if not args:
        from benchmarks.suite import main as suite_main

        suite_main([])
        return
    if args[0] in ("-h", "--help"):
        print(_help())
        return
    if args[0] == "--hydra-help":  # Hydra's own help (its flags, launchers, config groups)
        register_configs()
        sys.argv[1:] = ["--hydra-help", *args[1:]]
        run_one()
        return
    _check_former(args)
    if args[0] == "--list":
        print(_listing())
        return
    if args[0] == "--plan":
        from benchmarks.plan import describe
        from benchmarks.recipes import compose

        cfg, run_dir = compose(args[1:])
        print(describe(cfg, run_dir), end="")
        return
    _check_launcher(args)
    sys.argv[1:] = args = _absolute_out_dir(args)
    for arg in args:
        if arg.startswith("recipe=") and "," not in arg:
            from benchmarks.recipes import check_recipe_name

            try:
                check_recipe_name(arg.split("=", 1)[1])
            except ValueError as err:
                raise SystemExit(f"sema-bench: {err}") from None
    register_configs()
    run_one()
    from benchmarks.cli import SWEEP_FAILED as failed  # the module Hydra's callback filled (also under python -m)

    if failed:
        raise SystemExit(f"sema-bench: {len(failed)} run(s) of the sweep failed (each result.json holds its error; "
                         "rerun the sweep to redo them):\n  " + "\n  ".join(str(p.parent) for p in failed))


if __name__ == "__main__":
    main()
