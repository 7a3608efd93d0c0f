"""What the mmdet and mmseg runners share: the optimizer and lr schedule taken from `optim.*`, the per-epoch
evaluation of both the online and the averaged weights, and the result.json record of the engine.

The lr follows exactly the engine's per-step multiplier (`benchmarks.optim.lr_multiplier`: linear warm-up from 0,
then cosine / constant / multistep), set by `LrScheduleHook` before every iteration, so a method compares the same
way under both frameworks. `EpochRecorder` runs after the sema hook's `epoch_end()` (lower priority), evaluates the
model and, inside `averager.swapped()`, the average, fills the same history records as the engine and writes
result.json.

Resume, as the engine's runs: `EpochCheckpoint` saves an mmengine checkpoint at every epoch end to
`<run_dir>/mmengine/last_epoch.pth` (CHECKPOINT_FILE; written to a temporary file and renamed over the previous one,
so a crash never leaves a half-written "last" checkpoint). It holds mmengine's usual content (model, optimizer,
epoch/iter counters, and the message hub, stored as plain tensors and numbers so that the file loads with
torch.load(weights_only=True)), the sema hook's averager under "sema", the recorder's history and sample/time
counters under "sema_bench" and every RNG state under "sema_bench_rng". When result.json still says "running" (an
interrupted run) and that file exists, mmengine's own resume (`Runner(resume=True, load_from=...)`) continues from
it, bit for bit on CPU; so does a failed one (`resume_point`). The file is written with its SHA-256 beside it and
verified before use, and carries the run's config, checked on resume. The engine checks the config first
(ConfigMismatch) and skips completed runs. Like the engine's checkpoint.pt, the file stays after the run completes.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from benchmarks.checkpoint import FRAMEWORK_CHECKPOINT_FILE as CHECKPOINT_FILE  # the resume file, in run_dir
from benchmarks.checkpoint import FRAMEWORK_WORK_DIR as WORK_DIR  # mmengine's work_dir, in run_dir
from benchmarks.runtime import cache_dir  # noqa: F401  (where generated datasets are kept; used by the runners)

log = logging.getLogger(__name__)
# The trainer.* options the mmengine runners follow (benchmarks/frameworks.py): these, and for amp/device only the
# listed values (they train in float32 on mmengine's device choice).
HONOURED = frozenset({"epochs", "max_steps_per_epoch", "eval_every", "checkpoint", "deterministic", "num_threads",
                      "grad_clip", "median_of_last", "reported"})
ACCEPTED = {"amp": ("auto", "off"), "device": ("auto",)}
RECORD_KEY = "sema_bench"  # the recorder's history and counters inside that checkpoint
RNG_KEY = "sema_bench_rng"  # the RNG states at the epoch end inside that checkpoint
INSTALL_HINT = "build and install OpenMMLab with: bash scripts/install_openmmlab.sh .venv (about 12 min once)"


def require(*modules: str) -> None:
    """Fail early, with the install command, when an OpenMMLab package is missing."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ModuleNotFoundError(f"task.framework needs {', '.join(missing)}; {INSTALL_HINT}")



def optim_wrapper_cfg(cfg_optim: Any, grad_clip: Optional[float], batch_size: Optional[int] = None) -> dict:
    """mmengine OptimWrapper config for optim.* (sgd | adamw | adam) at the run's peak lr (benchmarks.optim.peak_lr
    for one process of `batch_size`, as the engine); the lr schedule is set by LrScheduleHook."""
    from benchmarks.optim import peak_lr

    lr = cfg_optim.lr if batch_size is None else peak_lr(cfg_optim, batch_size, world_size=1)[0]
    if cfg_optim.name == "sgd":
        optimizer = dict(type="SGD", lr=lr, momentum=cfg_optim.momentum, nesterov=cfg_optim.nesterov,
                         weight_decay=cfg_optim.weight_decay)
    elif cfg_optim.name in ("adamw", "adam"):
        optimizer = dict(type="AdamW" if cfg_optim.name == "adamw" else "Adam", lr=lr,
                         betas=tuple(cfg_optim.betas), weight_decay=cfg_optim.weight_decay)
    else:
        raise ValueError(f"optim.name={cfg_optim.name!r} is not allowed; choose one of: sgd, adamw, adam")
    wrapper = dict(type="OptimWrapper", optimizer=optimizer)
    if grad_clip is not None:
        wrapper["clip_grad"] = dict(max_norm=float(grad_clip))
    return wrapper


def sema_hook_kwargs(cfg_method: Any, steps_per_epoch: int) -> Optional[dict]:
    """SwitchEMAHook arguments for method.* (the same keyword arguments the engine builds the method with:
    benchmarks.methods.method_kwargs); None for the baseline."""
    from benchmarks.methods import method_kwargs

    kwargs = method_kwargs(cfg_method, steps_per_epoch)
    if kwargs is None:
        return None
    # The recorder evaluates the average itself, so the hook must not swap it in for validation.
    return dict(method=cfg_method.averager, swap_for_eval=False, copy_at_end=False, **kwargs)


def make_hooks(cfg: Any, steps_per_epoch: int, total_steps: int, result: dict,
               result_path: Optional[Path] = None):
    """(sema hook or None, lr hook, recorder hook) as mmengine Hook instances; the recorder writes `result` to
    `result_path` (if given) after every epoch, as the engine does."""
    from mmengine.hooks import Hook

    from benchmarks.optim import lr_multiplier

    kwargs = sema_hook_kwargs(cfg.method, steps_per_epoch)
    sema_hook = None
    if kwargs is not None:
        result["method_kwargs"] = {k: v for k, v in kwargs.items()
                                   if k not in ("method", "swap_for_eval", "copy_at_end")}
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
            self.elapsed_before = 0.0  # time_s reached before a resume (the engine's time_s spans resumes)

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
                from benchmarks.checkpoint import preserved_rng

                with preserved_rng():  # evaluations leave the training RNG untouched, as in the engine
                    online = dict(runner.val_loop.run())
                    avg, reused = None, False
                    if sema_hook is not None:
                        averager = sema_hook.averager
                        switched = _same_weights(runner.model, averager.average)
                        record["switched"] = switched
                        if switched:  # the model holds the average right now: one evaluation serves both
                            avg, reused = dict(online), True
                        else:
                            from sema.integrations.mmengine import prepare_for_eval

                            prepare_for_eval(runner, averager)  # e.g. SWA's BatchNorm re-estimation
                            with averager.swapped():
                                avg = dict(runner.val_loop.run())
                record.update(avg=avg, online=online, avg_reused_online=reused)
            record["time_s"] = self.elapsed_before + time.perf_counter() - self.run_start
            result["history"].append(record)
            fill_summary(result, samples=self.samples, train_time=self.train_time)
            if result_path is not None:
                from benchmarks.results import write_json_atomic

                write_json_atomic(result_path, result)

        def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
            from benchmarks.results import comparable_config

            checkpoint[RECORD_KEY] = {"history": result["history"], "samples": self.samples,
                                      "train_time_s": self.train_time,
                                      "config": comparable_config(result["config"])}  # checked when resumed

        def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
            from benchmarks.checkpoint import RESTART
            from benchmarks.integrity import CorruptFile
            from benchmarks.results import ConfigMismatch, comparable_config, config_differences

            state = checkpoint.get(RECORD_KEY)
            where = Path(result_path).parent / CHECKPOINT_FILE if result_path is not None else CHECKPOINT_FILE
            if not isinstance(state, dict) or "history" not in state:
                raise CorruptFile(f"{where} lacks the {RECORD_KEY!r} record: not a checkpoint of this runner; "
                                  f"{RESTART}")
            saved = state.get("config")  # compared as a rerun compares it (older code kept more keys)
            diffs = config_differences(comparable_config(saved) if isinstance(saved, dict) else saved,
                                       comparable_config(result["config"]))
            if state.get("config") is not None and diffs:  # one config never resumes another's work
                raise ConfigMismatch(f"{where} was written by a run with a different config:\n  "
                                     + "\n  ".join(diffs[:20]) + "\nUse another directory (out_dir=... or "
                                     "hydra.run.dir=...) or delete this one to start over.")
            result["history"] = list(state["history"])
            self.samples, self.train_time = state["samples"], state["train_time_s"]
            self.elapsed_before = result["history"][-1]["time_s"] if result["history"] else 0.0
            fill_summary(result, samples=self.samples, train_time=self.train_time)
            if result_path is not None:
                from benchmarks.results import write_json_atomic

                write_json_atomic(result_path, result)
            log.info("%s/%s/seed%s: resuming after epoch %d", result["task"], result["method"], result["seed"],
                     len(result["history"]))

    return sema_hook, LrScheduleHook(), EpochRecorder()


def checkpoint_hook(path: Path):
    """The hook that saves the epoch-end checkpoint to `path` and restores the RNG states on resume."""
    from mmengine.hooks import Hook

    from benchmarks.checkpoint import rng_state, set_rng_state

    class EpochCheckpoint(Hook):
        """Saves the resume checkpoint after every epoch; on resume, puts back the RNG states it saved."""

        priority = "VERY_LOW"  # last at the epoch end: after the switch, the evaluations and result.json

        def __init__(self):
            self.pending_rng: Optional[dict] = None

        def after_train_epoch(self, runner) -> None:
            # mmengine's CheckpointHook (max_keep_ckpts=1) deletes the previous file *before* it writes the new one
            # in place, and only then rewrites `last_checkpoint`: a crash in between leaves nothing valid to
            # resume. Here the new file is complete (and on disk) before it replaces the previous one.
            from benchmarks.integrity import write_verified

            write_verified(path, lambda tmp: runner.save_checkpoint(str(path.parent), Path(tmp).name,
                                                                   save_optimizer=True, save_param_scheduler=False))

        def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
            checkpoint[RNG_KEY] = rng_state()  # mmengine's resume only re-seeds: epoch 2 would see other draws
            checkpoint["message_hub"] = _plain_message_hub(checkpoint["message_hub"])

        def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
            # mmengine calls this inside its resume, before it loads checkpoint["message_hub"] into the runner.
            self.pending_rng = checkpoint[RNG_KEY]
            checkpoint["message_hub"] = _mmengine_message_hub(checkpoint["message_hub"])

        def before_train(self, runner) -> None:
            # Restored here, the last thing before the first resumed epoch (mmengine draws nothing in between).
            if self.pending_rng is not None:
                set_rng_state(self.pending_rng)
                self.pending_rng = None

    return EpochCheckpoint()


# mmengine 0.10 loads checkpoints with a plain torch.load, i.e. weights_only=True since torch 2.6, yet its own
# CheckpointHook's files hold the message hub's HistoryBuffer objects (their pickled state reaches
# `builtins.getattr`) and numpy scalars, so they only load with weights_only=False or
# TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1. Rather than turn that safety off, the two functions below store the message
# hub as tensors and plain values and rebuild it on load: the checkpoint is plain data, like the engine's.
def _plain_message_hub(hub: dict) -> dict:
    """MessageHub.state_dict() with each HistoryBuffer as {"log", "count", "max_length"} and numpy scalars as
    Python numbers."""
    import numpy as np

    scalars = {key: {"log": torch.from_numpy(np.array(buffer._log_history)),
                     "count": torch.from_numpy(np.array(buffer._count_history)), "max_length": buffer.max_length}
               for key, buffer in hub["log_scalars"].items()}
    info = {key: value.item() if isinstance(value, np.generic) else value
            for key, value in hub["runtime_info"].items()}
    return {**hub, "log_scalars": scalars, "runtime_info": info, "resumed_keys": dict(hub["resumed_keys"])}


def _mmengine_message_hub(hub: dict) -> dict:
    """The inverse of `_plain_message_hub`: what MessageHub.load_state_dict expects."""
    from collections import OrderedDict

    from mmengine.logging import HistoryBuffer

    scalars = OrderedDict((key, HistoryBuffer(value["log"].numpy(), value["count"].numpy(), value["max_length"]))
                          for key, value in hub["log_scalars"].items())
    return {**hub, "log_scalars": scalars}


def resume_point(run_dir: Path) -> Optional[Path]:
    """The checkpoint to resume from, or None. An interrupted or failed run (result.json "running" or "failed", or
    gone) resumes from its last epoch-end checkpoint, as the engine's runs do (a failure after a good checkpoint
    loses no finished epoch), once the file matches its digest; the config it carries is checked when it is loaded
    (EpochRecorder.after_load_checkpoint). A completed run never gets here (the engine skips it)."""
    from benchmarks.checkpoint import RESTART
    from benchmarks.integrity import verify

    checkpoint = Path(run_dir) / CHECKPOINT_FILE
    if not checkpoint.exists():
        return None
    verify(checkpoint, RESTART)
    return checkpoint


def _same_weights(model: torch.nn.Module, average: torch.nn.Module) -> bool:
    ours, theirs = model.state_dict(), average.state_dict()
    return ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def base_result(cfg: Any, headline: str, higher_is_better: bool, dataset: str, notes: list[str]) -> dict:
    """The engine's result.json record (benchmarks.results.new_result), for a run that mmengine trains."""
    from benchmarks.results import new_result
    from benchmarks.runtime import describe_runtime

    result = new_result(cfg, dataset=dataset, headline=headline, higher_is_better=higher_is_better, notes=notes)
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    from benchmarks.optim import peak_lr

    lr, global_batch = peak_lr(cfg.optim, cfg.task.batch_size, world_size=1)  # one process: the runners' case
    result["runtime"] = {**describe_runtime(device, world_size=1, precision="float32"),  # mmengine's Runner, fp32
                         "global_batch": global_batch, "peak_lr": lr}
    return result


def fill_summary(result: dict, samples: int, train_time: float) -> None:
    """final / best / median_last / timings from the history (benchmarks.results.summarize, as the engine)."""
    from benchmarks.results import peak_memory_mb, summarize

    device = torch.device("cuda") if torch.cuda.is_available() else None
    wall = result["history"][-1]["time_s"] if result["history"] else result["wall_time_s"]
    summarize(result, wall_time_s=wall, samples=samples, train_time_s=train_time,
              peak_memory_mb=peak_memory_mb(device),
              last_k=(result.get("config") or {}).get("trainer", {}).get("median_of_last", 3))


def execute(run_dir: Path, result: dict,
            train: Callable[[Optional[Path]], tuple[torch.nn.Module, Optional[torch.nn.Module]]]) -> dict:
    """Run `train(resume_from)` (-> online model, average or None), save weights, and write result.json (also on
    failure). `resume_from` is the checkpoint of an interrupted run in `run_dir`, or None (see `resume_point`)."""
    from benchmarks.integrity import CorruptFile
    from benchmarks.results import RESULT_FILE, ConfigMismatch, write_json_atomic

    run_dir.mkdir(parents=True, exist_ok=True)
    resume_from = resume_point(run_dir)  # before result.json is rewritten as "running"
    previous = (run_dir / RESULT_FILE).read_bytes() if (run_dir / RESULT_FILE).is_file() else None
    write_json_atomic(run_dir / RESULT_FILE, result)
    try:
        model, average = train(resume_from)
    except (ConfigMismatch, CorruptFile):  # a refused resume trained nothing: result.json goes back as it was
        if previous is None:
            (run_dir / RESULT_FILE).unlink(missing_ok=True)
        else:
            tmp = run_dir / f".{RESULT_FILE}.restore.tmp"  # (a leftover of a crash here is removed at the next start)
            tmp.write_bytes(previous)
            os.replace(tmp, run_dir / RESULT_FILE)
        raise
    except Exception as err:
        result.update(status="failed", error="".join(traceback.format_exception(err)))
        write_json_atomic(run_dir / RESULT_FILE, result)
        raise
    try:
        from safetensors.torch import save_model

        from benchmarks.integrity import write_verified

        for name, module in [("online", model), ("average", average)]:  # atomic, with their digests (as the engine)
            if module is not None:
                write_verified(run_dir / "weights" / f"{name}.safetensors", lambda tmp: save_model(module, tmp))
        result["status"] = "completed"
    except Exception as err:
        result.update(status="failed", error="".join(traceback.format_exception(err)))
        write_json_atomic(run_dir / RESULT_FILE, result)
        raise
    write_json_atomic(run_dir / RESULT_FILE, result)
    return result


def fit(runner, sema_hook) -> tuple[torch.nn.Module, Optional[torch.nn.Module]]:
    """runner.train() (resuming if the runner was built to); returns (trained model, average or None)."""
    runner.train()
    model = runner.model.module if hasattr(runner.model, "module") else runner.model
    return model, sema_hook.averager.average if sema_hook is not None else None


def runner_kwargs(cfg: Any, run_dir: Path, max_epochs: int, hooks: list,
                  resume_from: Optional[Path] = None) -> dict:
    """The mmengine Runner arguments both runners share (loops, logging, seeding, the epoch-end checkpoint when
    trainer.checkpoint, and resuming from `resume_from`)."""
    if cfg.trainer.checkpoint:
        hooks = [*hooks, checkpoint_hook(Path(run_dir) / CHECKPOINT_FILE)]
    if cfg.trainer.deterministic:
        # mmengine's own `deterministic=True` is strict and refuses CPU ops without a deterministic variant.
        torch.use_deterministic_algorithms(True, warn_only=True)
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    return dict(
        work_dir=str(Path(run_dir) / WORK_DIR),
        load_from=str(resume_from) if resume_from is not None else None,
        resume=resume_from is not None,  # mmengine's own resume: model, optimizer, counters, hooks' state
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs, val_begin=max_epochs + 1, val_interval=1),
        val_cfg=dict(type="ValLoop"),
        default_hooks=dict(
            checkpoint=None,  # replaced by EpochCheckpoint (atomic, one file); see checkpoint_hook
            logger=dict(type="LoggerHook", interval=50),
            param_scheduler=None,
        ),
        custom_hooks=[h for h in hooks if h is not None],
        randomness=dict(seed=cfg.seed, deterministic=False),
        env_cfg=dict(cudnn_benchmark=False, dist_cfg=dict(backend="nccl"),
                     mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0)),
        log_level="WARNING",
    )
