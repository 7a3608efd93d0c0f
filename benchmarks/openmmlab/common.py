"""What the mmdet and mmseg runners share: the optimizer and lr schedule taken from `optim.*`, the per-epoch
evaluation of both the online and the averaged weights, and the result.json record of the engine.

The lr follows exactly the engine's per-step multiplier (`benchmarks.engine.lr_multiplier`: linear warm-up from 0,
then cosine / constant / multistep), set by `LrScheduleHook` before every iteration, so a method compares the same
way under both frameworks. `EpochRecorder` runs after the sema hook's `epoch_end()` (lower priority), evaluates the
model and, inside `averager.swapped()`, the average, and fills the same history records as the engine.
"""

from __future__ import annotations

import importlib.util
import os
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

import torch

INSTALL_HINT = "build and install OpenMMLab with: bash scripts/install_openmmlab.sh .venv (about 12 min once)"


def require(*modules: str) -> None:
    """Fail early, with the install command, when an OpenMMLab package is missing."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ModuleNotFoundError(f"task.framework needs {', '.join(missing)}; {INSTALL_HINT}")


def cache_dir() -> Path:
    """Where generated datasets are kept: the engine's RunContext.cache_dir rule ($SEMA_BENCH_CACHE or ~/.cache)."""
    return Path(os.environ.get("SEMA_BENCH_CACHE", Path.home() / ".cache" / "sema-bench"))


def optim_wrapper_cfg(cfg_optim: Any, grad_clip: Optional[float]) -> dict:
    """mmengine OptimWrapper config for optim.* (sgd | adamw | adam); the lr schedule is set by LrScheduleHook."""
    if cfg_optim.name == "sgd":
        optimizer = dict(type="SGD", lr=cfg_optim.lr, momentum=cfg_optim.momentum, nesterov=cfg_optim.nesterov,
                         weight_decay=cfg_optim.weight_decay)
    elif cfg_optim.name in ("adamw", "adam"):
        optimizer = dict(type="AdamW" if cfg_optim.name == "adamw" else "Adam", lr=cfg_optim.lr,
                         betas=tuple(cfg_optim.betas), weight_decay=cfg_optim.weight_decay)
    else:
        raise ValueError(f"optim.name={cfg_optim.name!r} is not allowed; choose one of: sgd, adamw, adam")
    wrapper = dict(type="OptimWrapper", optimizer=optimizer)
    if grad_clip is not None:
        wrapper["clip_grad"] = dict(max_norm=float(grad_clip))
    return wrapper


def sema_hook_kwargs(cfg_method: Any, steps_per_epoch: int) -> Optional[dict]:
    """SwitchEMAHook arguments for method.* (epoch fields converted as the engine does); None for the baseline."""
    from benchmarks.methods import averager_kwargs

    if cfg_method.averager is None:
        return None
    # The recorder evaluates the average itself, so the hook must not swap it in for validation.
    return dict(method=cfg_method.averager, swap_for_eval=False, copy_at_end=False,
                **averager_kwargs(cfg_method, steps_per_epoch))


def make_hooks(cfg: Any, steps_per_epoch: int, total_steps: int, result: dict):
    """(sema hook or None, lr hook, recorder hook) as mmengine Hook instances."""
    from mmengine.hooks import Hook

    from benchmarks.engine import lr_multiplier

    kwargs = sema_hook_kwargs(cfg.method, steps_per_epoch)
    sema_hook = None
    if kwargs is not None:
        from sema.integrations.mmengine import SwitchEMAHook

        sema_hook = SwitchEMAHook(**kwargs)
    factor = lr_multiplier(cfg.optim, steps_per_epoch, total_steps)

    class LrScheduleHook(Hook):
        """Sets every param group's lr to its initial lr times the engine's multiplier for this step."""

        priority = "HIGH"

        def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
            for group in runner.optim_wrapper.optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
                group["lr"] = group["initial_lr"] * factor(runner.iter)

    class EpochRecorder(Hook):
        """Per-epoch history record (train loss, lr, switched, online and averaged metrics), as the engine's."""

        priority = "LOW"  # after SwitchEMAHook.after_train_epoch (NORMAL), i.e. after the switch

        def __init__(self):
            self.loss_sum, self.steps, self.samples, self.train_time = 0.0, 0, 0, 0.0
            self.epoch_start = self.run_start = 0.0

        def before_train(self, runner) -> None:
            self.run_start = time.perf_counter()

        def before_train_epoch(self, runner) -> None:
            self.loss_sum, self.steps = 0.0, 0
            self.epoch_start = time.perf_counter()

        def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
            loss = outputs["loss"]
            self.loss_sum += float(loss.detach() if torch.is_tensor(loss) else loss)
            self.steps += 1
            self.samples += len(data_batch["inputs"])

        def after_train_epoch(self, runner) -> None:
            self.train_time += time.perf_counter() - self.epoch_start
            epoch = runner.epoch + 1  # mmengine increments its counter after this hook
            record = {"epoch": epoch, "step": runner.iter, "train_loss": self.loss_sum / max(1, self.steps),
                      "lr": runner.optim_wrapper.optimizer.param_groups[0]["lr"], "switched": False,
                      "avg": None, "online": None}
            if epoch % cfg.trainer.eval_every == 0 or epoch == cfg.trainer.epochs:
                online = dict(runner.val_loop.run())
                avg, reused = None, False
                if sema_hook is not None:
                    averager = sema_hook.averager
                    switched = _same_weights(runner.model, averager.average)
                    record["switched"] = switched
                    if switched:  # the model holds the average right now: one evaluation serves both
                        avg, reused = dict(online), True
                    else:
                        with averager.swapped():
                            avg = dict(runner.val_loop.run())
                record.update(avg=avg, online=online, avg_reused_online=reused)
            record["time_s"] = time.perf_counter() - self.run_start
            result["history"].append(record)
            fill_summary(result, samples=self.samples, train_time=self.train_time)

    return sema_hook, LrScheduleHook(), EpochRecorder()


def _same_weights(model: torch.nn.Module, average: torch.nn.Module) -> bool:
    ours, theirs = model.state_dict(), average.state_dict()
    return ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def base_result(cfg: Any, headline: str, higher_is_better: bool, dataset: str, notes: list[str]) -> dict:
    """The engine's result.json skeleton (same keys), for a run that mmengine trains."""
    from omegaconf import OmegaConf

    from benchmarks.results import provenance

    return {
        "status": "running", "task": cfg.task.name, "dataset": dataset, "model": cfg.task.model,
        "method": cfg.method.name, "seed": cfg.seed, "profile": cfg.profile, "headline": headline,
        "higher_is_better": higher_is_better, "final": None, "final_online": None, "best": None,
        "best_epoch": None, "history": [], "epochs_to_target": None, "wall_time_s": None,
        "throughput_samples_per_s": None, "peak_memory_mb": None,
        "config": OmegaConf.to_container(cfg, resolve=True), "notes": notes, "error": None,
        "provenance": provenance(cfg.seed),
    }


def fill_summary(result: dict, samples: int, train_time: float) -> None:
    """final / final_online / best / best_epoch / timings from the history, as the engine computes them."""
    import resource

    evaluated = [r for r in result["history"] if r["online"] is not None]
    sign = 1.0 if result["higher_is_better"] else -1.0
    reported = (lambda r: r["avg"] if r["avg"] is not None else r["online"])
    if evaluated:
        last = evaluated[-1]
        result["final"], result["final_online"] = dict(reported(last)), dict(last["online"])
        best = max(evaluated, key=lambda r: sign * reported(r)[result["headline"]])
        result["best"], result["best_epoch"] = dict(reported(best)), best["epoch"]
    if result["history"]:
        result["wall_time_s"] = result["history"][-1]["time_s"]
    if train_time > 0:
        result["throughput_samples_per_s"] = samples / train_time
    if torch.cuda.is_available():
        result["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        result["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def execute(run_dir: Path, result: dict, train: Callable[[], tuple[torch.nn.Module, Optional[torch.nn.Module]]]
            ) -> dict:
    """Run `train` (-> online model, average or None), save weights, and write result.json (also on failure)."""
    from benchmarks.results import RESULT_FILE, write_json_atomic

    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / RESULT_FILE, result)
    try:
        model, average = train()
        from safetensors.torch import save_model

        (run_dir / "weights").mkdir(exist_ok=True)
        save_model(model, str(run_dir / "weights" / "online.safetensors"))
        if average is not None:
            save_model(average, str(run_dir / "weights" / "average.safetensors"))
        result["status"] = "completed"
    except Exception as err:
        result.update(status="failed", error="".join(traceback.format_exception(err)))
        write_json_atomic(run_dir / RESULT_FILE, result)
        raise
    write_json_atomic(run_dir / RESULT_FILE, result)
    return result


def runner_kwargs(cfg: Any, work_dir: Path, max_epochs: int, hooks: list) -> dict:
    """The mmengine Runner arguments both runners share (loops, logging, seeding, no checkpoint files)."""
    if cfg.trainer.deterministic:
        # mmengine's own `deterministic=True` is strict and refuses CPU ops without a deterministic variant.
        torch.use_deterministic_algorithms(True, warn_only=True)
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    return dict(
        work_dir=str(work_dir),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs, val_begin=max_epochs + 1, val_interval=1),
        val_cfg=dict(type="ValLoop"),
        default_hooks=dict(
            checkpoint=None,  # result.json and the weights files are the record; no per-epoch .pth files
            logger=dict(type="LoggerHook", interval=50),
            param_scheduler=None,
        ),
        custom_hooks=[h for h in hooks if h is not None],
        randomness=dict(seed=cfg.seed, deterministic=False),
        env_cfg=dict(cudnn_benchmark=False, dist_cfg=dict(backend="nccl"),
                     mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0)),
        log_level="WARNING",
    )
