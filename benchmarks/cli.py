"""`sema-bench`: the benchmark's command line (a Hydra app).

    sema-bench                                                   # the main job: the quick suite (suite.py)
    sema-bench task=classification method=sema seed=0 profile=quick            # one run
    sema-bench -m task=classification method=baseline,ema,sema seed=0,1,2      # a sweep
    sema-bench +experiment=cifar100_resnet18 task.data_root=/data method=sema  # a paper recipe
    torchrun --nproc_per_node=4 -m benchmarks.cli task=classification ...      # data parallel (DDP)

Config groups, run directories, launchers (joblib, submitit local/Slurm): configs/config.yaml's header.
In a sweep a failed run is recorded (status "failed" in its result.json) and the sweep goes on; a single run
that fails exits with the error.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from benchmarks.config import register_configs
from benchmarks.suite import CONFIG_DIR

log = logging.getLogger("sema-bench")


def _progress(cfg: DictConfig):
    from benchmarks.engine import LogProgress

    if cfg.logger.progress and sys.stdout.isatty():
        from benchmarks.suite import RichProgress

        return RichProgress()
    return LogProgress()


# An absolute path: a relative one is resolved against the console script's location, not this file's.
@hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base="1.3")
def run_one(cfg: DictConfig) -> dict | None:
    """One Hydra job: train (or resume, or skip) the run in its Hydra output directory."""
    from benchmarks import engine

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    progress = _progress(cfg)
    try:
        if hasattr(progress, "__enter__"):
            with progress:
                result = engine.run(cfg, run_dir, progress=progress)
        else:
            result = engine.run(cfg, run_dir, progress=progress)
    except Exception as err:
        if hydra_cfg.mode != RunMode.MULTIRUN:
            raise
        log.error("run in %s failed (recorded in its result.json); the sweep goes on: %s", run_dir, err)
        return None
    log.info("%s: %s; files in %s", result["method"], result["status"], run_dir)
    return result


def main() -> None:
    """Console entry point: no arguments -> the main job; otherwise a Hydra run or sweep."""
    if len(sys.argv) == 1:
        from benchmarks.suite import main as suite_main

        suite_main([])
        return
    register_configs()
    run_one()


if __name__ == "__main__":
    main()
