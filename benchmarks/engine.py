"""The one training loop every task runs through.

    result = engine.run(cfg, run_dir)      # cfg: the composed config (benchmarks.config.Config); returns result.json

What the engine owns (tasks only build a model, data, a loss and an evaluation: see tasks/protocol.py):
device choice, seeding and determinism, the data loader (shuffling, DistributedSampler under torchrun), the
optimizer and learning-rate schedule, the weight-averaging method (through `sema`'s public API only; see
methods.py), mixed precision (CUDA only), gradient clipping, NaN/inf detection, per-epoch evaluation of the
averaged and the online weights, checkpoints, logs and result.json.

Rerunning the same command in the same run directory:
* result.json says "completed" with the same config -> the run is skipped and its result returned;
* a checkpoint.pt from an interrupted run -> training resumes from it (bit for bit on CPU, RNG states included);
  task.framework=mmdet|mmseg runs do the same from mmengine/last_epoch.pth (benchmarks/openmmlab/common.py);
* result.json says "failed" -> the run starts over;
* the directory holds a run with a different config -> error (listing the differences), nothing is overwritten;
* another live process is writing the directory -> `benchmarks.runlock.RunLocked`, naming it (host, pid, job);
  a lock left by a dead process (or an earlier attempt of the same Slurm job) is taken over.

Notes for task authors: under torchrun, `train_loss` receives the DistributedDataParallel-wrapped model (call it,
do not reach into its submodules for the forward pass), while `evaluate`/`final_evaluate` get the plain model and
run on rank 0 only, except a task's `sharded_evaluation`, which every rank runs on its shard (benchmarks/evaluation.py),
and a `final_evaluate` the task marks `final_evaluate_on_every_rank` (it splits the work itself). Batches are
moved to the device by the engine (tensors nested in tuples, lists, dicts).

Per epoch: train, `averager.epoch_end()` (SEMA switches here), evaluate the online weights, evaluate the averaged
weights inside `averager.swapped()` (skipped, reusing the online numbers, only when a switch just made the model
and the average identical, checked tensor by tensor), append to `history`, write result.json, log, checkpoint.
A method with a `prepare_for_eval` hook (`sema.protocol.PreparesForEval`, e.g. SWA re-estimating its BatchNorm
statistics) gets it called right before each evaluation of the average, with fixed training batches and the
task's training forward pass, every RNG untouched (`Trainer.prepare_average`). The engine holds no
method-specific code: methods are built by benchmarks/methods.py and used through `sema`'s protocols only.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import random
import signal
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Protocol, Sequence

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler

from benchmarks import checkpoint as ckpt
from benchmarks import frameworks
from benchmarks.config import validate
from benchmarks.data.device_batches import BatchesOnDevice, DeviceBatches
from benchmarks.logger import RunLogger
from benchmarks.evaluation import evaluate_sharded
from benchmarks.integrity import CorruptFile, remove_stale_temporaries, verify, write_verified
from benchmarks.methods import build_averager
from benchmarks.riders import TRAJECTORY_FILE, Rider, check_shareable, plan
from benchmarks.optim import build_optimizer, lr_multiplier, peak_lr, without_decay_on_1d
from benchmarks.results import (RESULT_FILE, ConfigMismatch, comparable_config, config_differences, new_result,
                                peak_memory_mb, read_result, summarize, write_json_atomic)
from benchmarks.runlock import RunLock
from benchmarks.runtime import choose_device, describe_runtime, peak_flops, to_device
from benchmarks.strategy import TRAINER_STATE_FILE, dcp_path, full_weights, load_dcp, load_sharded_state, \
    save_dcp, shard_model, sharded_state
from benchmarks.tasks import load_task
from benchmarks.tasks.protocol import RunContext, TaskSetup
from sema.protocol import PreparesForEval, WrapsOptimizer

log = logging.getLogger(__name__)


class ResumeRefused(ValueError):
    """The run directory's checkpoint cannot resume this run (e.g. written inside an epoch at another world size).
    The run is left as it was (checkpoint kept, status "running"): rerun as the message says."""


class NonFiniteLoss(FloatingPointError):
    """The training loss became NaN or infinite."""


class Preempted(BaseException):
    """A stop signal (SIGTERM, SIGUSR2) arrived: the run checkpointed and stopped; rerun it to resume. Like
    KeyboardInterrupt it is not an Exception: a sweep or the suite stops too instead of starting the next run."""


class StopRequest:
    """Set by the signal handlers `run` installs; the trainer checks it after every step (under torchrun, the ranks
    agree on it every trainer.nan_check_every steps and at each epoch's last step)."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None


STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)  # Slurm's preemption / time-limit warning, submitit's requeue


class Progress(Protocol):
    """What the engine reports while it runs (the CLI and the suite draw progress bars with it)."""

    def start(self, name: str, epochs: int, steps_per_epoch: int, done_epochs: int) -> None: ...
    def step(self, steps: int) -> None: ...
    def epoch(self, record: dict[str, Any]) -> None: ...
    def end(self, result: dict[str, Any]) -> None: ...


class LogProgress:
    """Default progress: one log line per epoch."""

    def start(self, name, epochs, steps_per_epoch, done_epochs):
        self.name, self.epochs = name, epochs
        log.info("%s: %d epochs x %d steps (%d done)", name, epochs, steps_per_epoch, done_epochs)

    def step(self, steps):
        pass

    def epoch(self, record):
        log.info("%s epoch %d/%d: %s", self.name, record["epoch"], self.epochs, describe(record))

    def end(self, result):
        name = f"{result['task']}/{result['method']}/seed{result['seed']}"
        log.info("%s %s: final %s", name, result["status"], result.get("final"))


def describe(record: dict[str, Any]) -> str:
    """A one-line summary of an epoch record."""
    parts = [f"loss {record['train_loss']:.4f}"]
    for key in ("avg", "online"):
        if record.get(key):
            parts.append(key + " " + " ".join(f"{k} {v:.4g}" for k, v in record[key].items()))
    return ", ".join(parts) + f" ({record['time_s']:.1f} s)"


# --------------------------------------------------------------------------------------------- small helpers
_OWN_STORES: list[str] = []  # file stores of the one-process groups _distributed made


def _distributed(timeout_min: float = 30.0, need_group: bool = False) -> tuple[int, int, int, bool]:
    """(rank, world_size, local_rank, whether a group was made here for one process) from torchrun's (or a
    multi-task Slurm job's) environment; initialises the process group when there is more than one process, or
    (`need_group`, for trainer.strategy=fsdp2) a one-process group when there is none."""
    if "WORLD_SIZE" not in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        from submitit.helpers import TorchDistributedEnvironment  # tasks_per_node > 1 under submitit/srun

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if world == 1:
        if not need_group or torch.distributed.is_initialized():
            return 0, 1, 0, False
        import tempfile

        store = tempfile.NamedTemporaryFile(prefix="sema-bench-pg-", delete=False).name
        torch.distributed.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo",
                                             init_method=f"file://{store}", rank=0, world_size=1,
                                             timeout=datetime.timedelta(minutes=timeout_min))
        _OWN_STORES.append(store)  # removed with the group (run's finally)
        return 0, 1, 0, True
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_min))
    return rank, world, local_rank, False


def _barrier(world: int) -> None:
    if world > 1:
        torch.distributed.barrier()


def _agree_with_rank0(world: int, error: Optional[BaseException]) -> None:
    """A collective after work only rank 0 does: rank 0 re-raises its `error`; with several ranks, the others get
    its message (as a RuntimeError) instead of waiting for a rank that has left."""
    if world > 1:
        message = [None if error is None else f"{type(error).__name__}: {error}"]
        torch.distributed.broadcast_object_list(message, src=0)
        if message[0] is not None and error is None:
            raise RuntimeError(f"rank 0 stopped: {message[0]}")
    if error is not None:
        raise error


def _device(choice: str, local_rank: int, profile: str = "quick") -> torch.device:
    """The Trainer's device (benchmarks.runtime.choose_device); tests point it at `meta` to check placement."""
    return choose_device(choice, local_rank, profile)


def _amp_dtype(amp: str, device: torch.device) -> Optional[torch.dtype]:
    if device.type != "cuda":
        if amp in ("bf16", "fp16"):
            raise ValueError(f"trainer.amp={amp} needs CUDA (mixed precision is CUDA-only); use auto or off on CPU")
        return None
    return {"auto": torch.bfloat16, "bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[amp]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _seed_worker(worker_id: int) -> None:
    # DataLoader seeds torch in each worker from the loader's generator; numpy and random follow it.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    # The shuffle of each epoch depends only on (seed, epoch): identical whether or not the run was resumed. Under
    # torchrun the loader's generator also seeds its workers, so each rank gets its own (rank 0 keeps the
    # single-process value, so one-process runs are unchanged).
    return (seed * 1_000_003 + epoch + rank * 7_919_000_017) % 2**63


def batch_size_of(batch: Any) -> int:
    """Examples in a batch: the first dimension of its first tensor that has one (0 if none)."""
    if isinstance(batch, torch.Tensor):
        return batch.shape[0] if batch.ndim else 0
    values = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else ()
    for value in values:
        n = batch_size_of(value)
        if n:
            return n
    return 0


SHARDED_KEYS = ("model", "optimizer", "averager", "riders")  # fsdp2: the checkpoint entries DCP writes as shards


class MicroBatches(list):
    """The micro-batches of one optimizer step (trainer.grad_accum_steps > 1)."""


def _micro_batches(batches: Iterator[Any], accum: int) -> Iterator[Any]:
    """The loader's batches grouped `accum` at a time (an incomplete last group is dropped); plain batches when 1."""
    if accum == 1:
        yield from batches
        return
    group = MicroBatches()
    for batch in batches:
        group.append(batch)
        if len(group) == accum:
            yield group
            group = MicroBatches()


def _state_equal(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def _save_weights(weights: nn.Module | tuple[dict[str, torch.Tensor], dict[str, str]], path: Path) -> None:
    """A module, or (full tensors, tied names) gathered from shards (benchmarks.strategy.full_weights), as a
    safetensors file written atomically with its digest (benchmarks/integrity.py); tied weights are kept once."""
    from safetensors.torch import save_file, save_model  # save_model handles tied weights, unlike save_file

    if isinstance(weights, nn.Module):
        write_verified(path, lambda tmp: save_model(weights, tmp))
    else:
        tensors, tied = weights
        write_verified(path, lambda tmp: save_file({k: v.contiguous() for k, v in tensors.items()}, tmp,
                                                   metadata=tied or None))


# ------------------------------------------------------------------------------------------------- trainer
class Trainer:
    """One run's state: model, data, optimizer, schedule, averager; `train_epoch` + `evaluate` + checkpoints."""

    def __init__(self, cfg: DictConfig, run_dir: Path, rank: int = 0, world_size: int = 1, local_rank: int = 0,
                 riders: Sequence[Rider] = ()):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.rank, self.world_size = rank, world_size
        trainer = cfg.trainer
        if trainer.num_threads:
            torch.set_num_threads(trainer.num_threads)
        # Every backend flag set for this run in both branches: runs sharing a process (the suite, a sweep) must
        # not inherit each other's. Deterministic: torch's defaults; otherwise speed over bit-exactness
        # (cuDNN autotuning, TF32 matrix products on Ampere and newer).
        if trainer.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(trainer.deterministic, warn_only=True)
        torch.backends.cudnn.benchmark = not trainer.deterministic
        torch.backends.cuda.matmul.allow_tf32 = not trainer.deterministic
        torch.backends.cudnn.allow_tf32 = True  # torch's default in both
        self.device = _device(trainer.device, local_rank, cfg.profile)
        self.amp_dtype = _amp_dtype(trainer.amp, self.device)
        self.precision = {None: "float32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]
        seed_everything(cfg.seed)

        task_module = load_task(cfg.task.name)
        task_cfg = OmegaConf.to_object(cfg.task)
        ctx = self.ctx = RunContext.of_run(cfg, self.device, self.run_dir, rank, world_size)
        self.task: TaskSetup = task_module.setup(task_cfg, ctx)
        self.model = self.task.model.to(self.device)  # the engine owns placement: the model, then its average
        channels_last = (trainer.channels_last if trainer.channels_last is not None
                         else self.device.type == "cuda" and not trainer.deterministic)
        if channels_last and any(isinstance(m, nn.Conv2d) for m in self.model.modules()):
            self.model = self.model.to(memory_format=torch.channels_last)  # 4-D weights only; the rest unchanged
        self.strategy = trainer.strategy
        self._spread(cfg)  # activation checkpointing and fsdp2 sharding, before the optimizer and the average
        # Training randomness (augmentation, dropout) gets its own stream, distinct per rank.
        seed_everything(cfg.seed + 1_000_003 * (rank + 1))

        self.generator = torch.Generator()  # the loader's: its workers' base seeds
        self.shuffle_generator = torch.Generator()  # the sampler's shuffle (one process)
        self.sampler = None
        if world_size > 1:
            from torch.utils.data import DistributedSampler

            self.sampler = DistributedSampler(self.task.train_set, num_replicas=world_size, rank=rank, shuffle=True,
                                              seed=cfg.seed, drop_last=trainer.drop_last)
        self.on_device = self._batches_on_device(cfg)
        self.augment_generator = torch.Generator(self.device) if self.on_device else None
        self.loader = self.build_loader(cfg, self.generator, self.shuffle_generator, self.augment_generator)
        self.steps_per_epoch = ctx.steps_per_epoch(len(self.task.train_set))
        assert self.steps_per_epoch == min(len(self.loader) // trainer.grad_accum_steps,
                                           trainer.max_steps_per_epoch or len(self.loader))
        if self.steps_per_epoch == 0:
            raise ValueError(f"the training set ({len(self.task.train_set)} examples) is smaller than one batch "
                             f"(task.batch_size={cfg.task.batch_size}); lower the batch size or use more data")
        self.total_steps = self.steps_per_epoch * trainer.epochs

        groups = (self.task.param_groups(self.model) if self.task.param_groups
                  else [{"params": [p for p in self.model.parameters() if p.requires_grad]}])
        if not cfg.optim.decay_1d:
            groups = without_decay_on_1d(groups, {id(p): n for n, p in self.model.named_parameters()})
        self.peak_lr, self.global_batch = peak_lr(cfg.optim, cfg.task.batch_size * trainer.grad_accum_steps,
                                                  world_size)
        self.optimizer = build_optimizer(cfg.optim, groups, lr=self.peak_lr)
        self.averager, self.method_kwargs = build_averager(cfg.method, self.task.averaged_module or self.model,
                                                           self.steps_per_epoch)
        if isinstance(self.averager, WrapsOptimizer):  # methods acting on the optimizer (e.g. Lookahead)
            self.optimizer = self.averager.wrap_optimizer(self.optimizer)
        self.riders = list(riders)  # passive methods on this trajectory (benchmarks/riders.py), each its own run
        for rider in self.riders:
            rider.averager, rider.method_kwargs = build_averager(rider.cfg.method,
                                                                 self.task.averaged_module or self.model,
                                                                 self.steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_multiplier(cfg.optim, self.steps_per_epoch, self.total_steps))
        fp16 = self.amp_dtype == torch.float16 or (self.strategy == "fsdp2" and trainer.fsdp_param_dtype == "fp16")
        self.scaler = torch.amp.GradScaler(self.device.type) if fp16 else None

        self.train_model: nn.Module = self.model  # fsdp2 shards in place: no wrapper
        if world_size > 1 and self.strategy == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(self.model, device_ids=ids)
        if trainer.compile:
            self.train_model = torch.compile(self.train_model)

        self.epoch = 0  # epochs completed
        self.global_step = 0  # optimizer steps completed
        self.history: list[dict[str, Any]] = []
        self.elapsed_s = 0.0  # wall time of completed epochs (training + evaluation), across resumes
        self.train_time_s = 0.0  # wall time inside train_epoch
        self.samples_seen = 0  # training examples processed (this process)
        self.step_in_epoch = 0  # optimizer steps done in the current epoch (> 0 only inside an epoch)
        self.epoch_loss_sum = torch.zeros((), dtype=torch.float64)  # the current epoch's loss sum so far
        self.epoch_elapsed_s = 0.0  # wall time of the current epoch before a checkpoint inside it
        self.stop = StopRequest()  # run() replaces it with the one its SIGTERM/SIGUSR2 handlers set
        self._resume_rng: Optional[dict] = None  # the RNG states to restore once a resumed epoch reached its step

    def _spread(self, cfg: DictConfig) -> None:
        trainer, name = cfg.trainer, cfg.task.name
        if trainer.activation_checkpointing:
            if self.task.activation_checkpointing is None:
                raise ValueError(f"trainer.activation_checkpointing=true: the {name} task does not offer it "
                                 "(TaskSetup.activation_checkpointing; the lm task does); set it to false")
            self.task.activation_checkpointing(self.model)
        if self.strategy != "fsdp2":
            return
        if self.task.shard_blocks is None:
            raise ValueError(f"trainer.strategy=fsdp2: the {name} task does not say how to shard its model "
                             "(TaskSetup.shard_blocks; the lm task does); use trainer.strategy=ddp")
        rank0_only = self.task.sharded_evaluation is None or (self.task.final_evaluate is not None
                                                               and not self.task.final_evaluate_on_every_rank)
        if rank0_only and self.world_size > 1:  # an FSDP2 forward is a collective: rank 0 alone would wait forever
            raise ValueError(f"trainer.strategy=fsdp2: the {name} task evaluates on rank 0 alone (TaskSetup."
                             "sharded_evaluation, final_evaluate_on_every_rank); use trainer.strategy=ddp")
        if self.task.averaged_module is not None:
            raise ValueError(f"trainer.strategy=fsdp2 averages the whole model; the {name} task averages a part of "
                             "it (TaskSetup.averaged_module); use trainer.strategy=ddp")
        dtype = {None: None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[
            trainer.fsdp_param_dtype]
        if dtype in (torch.bfloat16, torch.float16):  # computed in it (result.json's runtime.precision)
            self.precision = trainer.fsdp_param_dtype
        shard_model(self.model, self.task.shard_blocks(self.model), self.device, self.world_size, dtype)

    def _batches_on_device(self, cfg: DictConfig) -> bool:
        """Whether the training batches are made on the device (trainer.data_on_device; null = on CUDA)."""
        trainer, train_set = cfg.trainer, self.task.train_set
        on_device = trainer.data_on_device if trainer.data_on_device is not None else self.device.type == "cuda"
        if on_device and not isinstance(train_set, BatchesOnDevice):
            if trainer.data_on_device:
                raise ValueError(f"trainer.data_on_device=true: the {cfg.task.name} task's training set "
                                 f"({type(train_set).__name__}) cannot make batches on the device; set it to null")
            return False
        return on_device

    def build_loader(self, cfg: DictConfig, generator: torch.Generator, shuffle_generator: torch.Generator,
                     augment_generator: Optional[torch.Generator]) -> Iterable:
        """The training batches: a DataLoader, or (trainer.data_on_device) batches the dataset makes on the device
        for the index batches of the same sampler (the same examples in the same order). `generator` seeds the
        loader's workers, `shuffle_generator` shuffles (one process; DistributedSampler under torchrun),
        `augment_generator` draws the device batches' augmentation."""
        trainer, train_set = cfg.trainer, self.task.train_set
        sampler = self.sampler or RandomSampler(train_set, generator=shuffle_generator)
        if self.on_device:
            return DeviceBatches(train_set.on_device(self.device),
                                 BatchSampler(sampler, cfg.task.batch_size, trainer.drop_last), self.device,
                                 augment_generator)
        return DataLoader(
            train_set, batch_size=cfg.task.batch_size, sampler=sampler,
            generator=generator, num_workers=cfg.task.num_workers, collate_fn=self.task.collate_fn,
            drop_last=trainer.drop_last, pin_memory=self.device.type == "cuda", worker_init_fn=_seed_worker,
            # workers kept across epochs (not re-created for each): faster, but their random streams then run on
            # from epoch to epoch, so a resumed run's augmentation differs unless trainer.deterministic keeps them
            # per epoch (bit-exact resume)
            persistent_workers=cfg.task.num_workers > 0 and not trainer.deterministic,
        )

    # ---------------------------------------------------------------------------------------------- training
    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def train_epoch(self, on_steps: Optional[Callable[[int], None]] = None,
                    checkpoint: Optional[Callable[[], None]] = None) -> float:
        """One epoch of optimizer steps (at most trainer.max_steps_per_epoch); returns the mean training loss.

        Inside the epoch, `checkpoint()` is called every trainer.checkpoint_every_steps steps and when a stop signal
        arrived (then `Preempted` is raised). A run resumed from such a checkpoint starts at `step_in_epoch`: the
        epoch's loader is recreated with the same seed, the batches already trained are drawn and dropped, and
        the RNG states of the checkpoint are restored before the next batch, so training goes on bit for bit."""
        trainer, epoch = self.cfg.trainer, self.epoch + 1
        seed = _epoch_seed(self.cfg.seed, epoch, self.rank)
        self.generator.manual_seed(seed)
        self.shuffle_generator.manual_seed(seed)
        # The shuffle skips one draw: earlier versions shuffled with the loader's generator, after the base seed
        # a DataLoader draws for its workers at every new iterator; skipping it keeps every run's order, also
        # with persistent workers (which draw no new base seed) and with batches made on the device.
        torch.empty((), dtype=torch.int64).random_(generator=self.shuffle_generator)
        if self.augment_generator is not None:  # batches made on the device: their draws, per epoch too
            self.augment_generator.manual_seed(_epoch_seed(self.cfg.seed + 1, epoch, self.rank))
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        self.train_model.train()
        steps = self.step_in_epoch
        loss_sum = self.epoch_loss_sum.to(self.device) if steps else torch.zeros((), dtype=torch.float64,
                                                                                  device=self.device)
        report_every = max(1, self.steps_per_epoch // 20)
        check_every, every = trainer.nan_check_every, trainer.checkpoint_every_steps
        start = time.perf_counter()
        accum = trainer.grad_accum_steps
        batches = iter(self.loader)
        for _ in range(steps * accum):  # a resumed epoch: skip what was trained, then continue on the saved RNG
            next(batches)
        if self._resume_rng is not None:
            ckpt.set_rng_state(self._resume_rng)
            self._resume_rng = None
        for group in _micro_batches(batches, accum):
            if steps == self.steps_per_epoch:
                break
            self.samples_seen += sum(batch_size_of(batch) for batch in group)
            loss = self.train_step(group)
            steps += 1
            loss_sum += loss
            self.step_in_epoch, self.epoch_loss_sum = steps, loss_sum
            if steps % check_every == 0:
                self._check_finite(loss_sum, epoch, steps)
            if on_steps is not None and steps % report_every == 0:
                on_steps(report_every)
            last = steps == self.steps_per_epoch  # a stop here waits for the epoch-end checkpoint (_train)
            stop = self._stop_requested(steps, check_every, last)
            if checkpoint is not None and not last and (stop or (every and steps % every == 0)):
                self.train_time_s += time.perf_counter() - start
                checkpoint()
                start = time.perf_counter()  # the checkpoint's time is not training time (throughput, MFU)
            if stop and not last:
                raise Preempted(self.stopped_at(steps, epoch))
        self._check_finite(loss_sum, epoch, steps)
        self.step_in_epoch = 0
        self.train_time_s += time.perf_counter() - start
        mean_loss = loss_sum / steps
        if self.world_size > 1:
            torch.distributed.all_reduce(mean_loss)
            mean_loss /= self.world_size
        return float(mean_loss)

    def train_step(self, batch: Any) -> torch.Tensor:
        """One optimizer step on `batch` (moved to the device here), or on the micro-batches of a `MicroBatches`
        (trainer.grad_accum_steps; each loss / k, gradients reduced across ranks at the last one only): forward,
        backward, clip, step, schedule, the WA update (once per step) and the task's after_step. Returns the
        detached (mean) loss; no host synchronisation."""
        clip = self.cfg.trainer.grad_clip
        micro = batch if isinstance(batch, MicroBatches) else [batch]
        self.optimizer.zero_grad(set_to_none=True)
        loss = None  # one micro-batch (the usual case): its loss itself, no extra kernels on the hot path
        for i, part in enumerate(micro):
            with self._gradient_sync(i == len(micro) - 1):  # forward and backward of the micro-batch
                with self._autocast():
                    part_loss = self.task.train_loss(self.train_model, to_device(part, self.device))
                    if len(micro) > 1:
                        part_loss = part_loss / len(micro)
                (self.scaler.scale(part_loss) if self.scaler is not None else part_loss).backward()
            loss = part_loss.detach() if loss is None else loss + part_loss.detach()
        if self.scaler is not None:
            if clip is not None:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.optimizer.step()
        self.scheduler.step()
        if self.averager is not None:
            self.averager.update()
        for rider in self.riders:
            rider.averager.update()
        self.global_step += 1
        if self.task.after_step is not None:
            self.task.after_step(self.global_step)
        return loss

    def _gradient_sync(self, sync: bool):
        """Around the forward and backward of a micro-batch: under DDP gradients are all-reduced at the last one
        only (no_sync); under fsdp2 at every one (see below)."""
        if sync or self.world_size == 1 or self.strategy == "fsdp2":
            # fsdp2 reduce-scatters every micro-batch into the sharded gradients: skipping it would keep full,
            # unsharded float32 gradients on every rank until the last one (a whole model's worth of memory)
            return contextlib.nullcontext()
        return self.train_model.no_sync()

    def stopped_at(self, steps: int, epoch: int) -> str:
        saved = "checkpointed" if self.cfg.trainer.checkpoint else "NOT checkpointed (trainer.checkpoint=false)"
        return f"signal {self.stop.signum}: stopped after step {steps} of epoch {epoch}, {saved}"

    def _stop_requested(self, steps: int, check_every: int, last: bool) -> bool:
        """Whether a stop signal arrived (under torchrun: on any rank, agreed every `check_every` steps and at
        the epoch's last step)."""
        if self.world_size > 1 and steps % check_every and not last:
            return False
        return self.stop_agreed()

    def _check_finite(self, loss_sum: torch.Tensor, epoch: int, steps: int) -> None:
        """NonFiniteLoss when the loss sum is NaN/inf, under torchrun on any rank (all ranks raise together)."""
        bad = (~torch.isfinite(loss_sum)).to(torch.float32).reshape(1)
        if self.world_size > 1:
            torch.distributed.all_reduce(bad)
        if bad.item() > 0:
            raise NonFiniteLoss(f"the training loss became {loss_sum.item()} in epoch {epoch} "
                                f"(by step {steps} of the epoch, global step {self.global_step}; on this rank or "
                                "another)")

    def stop_agreed(self) -> bool:
        """Whether any rank received a stop signal (a collective under torchrun: every rank calls it)."""
        if self.world_size == 1:
            return self.stop.signum is not None
        flag = torch.tensor([1.0 if self.stop.signum is not None else 0.0], device=self.device)
        torch.distributed.all_reduce(flag)
        if flag.item() > 0 and self.stop.signum is None:
            self.stop.signum = signal.SIGTERM
        return flag.item() > 0

    # -------------------------------------------------------------------------------------------- evaluation
    def _evaluate(self) -> dict[str, float]:
        # Evaluation leaves every RNG as it found it: a DataLoader draws its base seed from the global generator
        # even unshuffled, so without this an EMA run (two evaluations per epoch) would train on other random
        # draws than the baseline (one), and eval_every would change the trajectory.
        self.model.eval()
        try:
            with ckpt.preserved_rng(), torch.no_grad(), self._autocast():
                if self.task.sharded_evaluation is not None:  # every rank its own shard (benchmarks/evaluation.py)
                    return evaluate_sharded(self.task.sharded_evaluation, self.model, self.device, self.rank,
                                            self.world_size)
                return {k: float(v) for k, v in self.task.evaluate(self.model).items()}
        finally:
            self.model.train()

    def weights(self, averager: Any = "primary") -> dict[str, Any]:
        """What the run saves as weights/<name>.safetensors: "online" (and "average", of `averager`, default the
        run's own): the modules, or under fsdp2 their full tensors gathered from the shards (a collective: every
        rank calls it)."""
        averager = self.averager if averager == "primary" else averager
        modules = {"online": self.model}
        if averager is not None:
            modules["average"] = averager.average
        if self.strategy == "fsdp2":
            return {k: full_weights(m) for k, m in modules.items()}
        return modules

    def final_metrics(self, averager: Any = "primary", out_dir: Optional[Path] = None) -> dict[str, float]:
        """task.final_evaluate on the weights being reported (the average of `averager`, default the run's own,
        when there is one). `out_dir`: where this evaluation's artefacts go (a rider's run directory; the task
        reads ctx.out_dir), by default the run's own."""
        averager = self.averager if averager == "primary" else averager
        self.model.eval()
        own_dir, self.ctx.out_dir = self.ctx.out_dir, Path(out_dir) if out_dir is not None else self.ctx.out_dir
        try:
            with torch.no_grad():
                if averager is None:
                    return {k: float(v) for k, v in self.task.final_evaluate(self.model).items()}
                with averager.swapped():
                    return {k: float(v) for k, v in self.task.final_evaluate(self.model).items()}
        finally:
            self.ctx.out_dir = own_dir
            self.model.train()

    def evaluate(self, switched: bool) -> tuple[Optional[dict], dict, bool]:
        """(averaged metrics or None, online metrics, whether the averaged evaluation was reused)."""
        online = self._evaluate()
        if self.averager is None:
            return None, online, False
        bound = self.task.averaged_module or self.model
        before = [t.detach().clone() for t in bound.state_dict().values()] if switched else None
        if isinstance(self.averager, PreparesForEval):
            self.prepare_average(bound, self.averager)
        with self.averager.swapped():
            # After a switch the model usually *is* the average; evaluate twice only if a tensor differs.
            if before is not None and _state_equal(before, list(bound.state_dict().values())):
                return dict(online), online, True
            averaged = self._evaluate()
        return averaged, online, False

    def evaluate_riders(self) -> dict[str, dict]:
        """Each rider's averaged metrics (a passive method never switched: no evaluation is reused)."""
        out = {}
        for rider in self.riders:
            if isinstance(rider.averager, PreparesForEval):
                self.prepare_average(self.task.averaged_module or self.model, rider.averager)
            with rider.averager.swapped():
                out[rider.name] = self._evaluate()
        return out

    def prepare_average(self, bound: nn.Module, averager: Any) -> None:
        """Call the method's `prepare_for_eval(batches, forward)` (e.g. SWA's BatchNorm re-estimation).

        Side-effect free for training: the batches come from a loader shuffled with a fixed seed (the same
        examples at every call, resumed or not), `forward` is the task's `train_loss` on the whole model in train
        mode (the loss is discarded), the call runs on a fixed seed inside `preserved_rng()`, and the buffers of
        the model outside `bound` (a task whose averaged module is a part of the model) are restored afterwards."""
        ours = {id(b) for b in bound.buffers()}
        outside = [b for b in self.model.buffers() if id(b) not in ours]
        outside_saved = [b.detach().clone() for b in outside]
        loader = DataLoader(self.task.train_set, batch_size=self.cfg.task.batch_size, shuffle=True,
                            generator=torch.Generator().manual_seed(_epoch_seed(self.cfg.seed, 0)),
                            num_workers=self.cfg.task.num_workers, collate_fn=self.task.collate_fn,
                            drop_last=self.cfg.trainer.drop_last, worker_init_fn=_seed_worker)

        def forward(batch: Any) -> None:
            with self._autocast():
                self.task.train_loss(self.model, to_device(batch, self.device))

        try:
            with ckpt.preserved_rng():
                seed_everything(self.cfg.seed)
                self.model.train()
                averager.prepare_for_eval(loader, forward)
        finally:
            with torch.no_grad():
                for buffer, saved in zip(outside, outside_saved):
                    buffer.copy_(saved)

    # ------------------------------------------------------------------------------------------- checkpoints
    def rng_states(self) -> list[dict[str, Any]]:
        """Every rank's RNG states, in rank order (a collective under torchrun: every rank calls it)."""
        mine = {**ckpt.rng_state(self.generator), "epoch_loss_sum": self.epoch_loss_sum.detach().cpu()}
        if self.world_size == 1:
            return [mine]
        states: list = [None] * self.world_size
        torch.distributed.all_gather_object(states, mine)
        return states

    def state_dict(self, logger_run_id: Optional[str], rng_ranks: Optional[list] = None) -> dict[str, Any]:
        """Everything a resume needs. Under fsdp2 model, optimizer and average are this rank's DTensor shards
        (every rank calls it; `save_checkpoint` writes them with torch.distributed.checkpoint). `rng_ranks`:
        every rank's RNG states and partial loss sum (rng_states())."""
        model, optimizer = (sharded_state(self.model, self.optimizer) if self.strategy == "fsdp2"
                            else (self.model.state_dict(), self.optimizer.state_dict()))
        return {
            "format": 1,
            "config": comparable_config(OmegaConf.to_container(self.cfg, resolve=True)),  # checked when resumed
            "epoch": self.epoch,
            "global_step": self.global_step,
            "model": model,
            "averager": self.averager.state_dict() if self.averager is not None else None,
            "riders": {r.name: r.averager.state_dict() for r in self.riders},  # each rider's average
            "rider_configs": {r.name: comparable_config(OmegaConf.to_container(r.cfg, resolve=True)) for r in self.riders},
            "rider_histories": {r.name: r.history for r in self.riders},
            "rider_logger_ids": {r.name: r.logger.run_id if r.logger else None for r in self.riders},
            "optimizer": optimizer,
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": ckpt.rng_state(self.generator),
            "rng_ranks": rng_ranks,  # each rank's own states (None: a one-process run, see "rng")
            "world_size": self.world_size,
            "steps_per_epoch": self.steps_per_epoch,
            "history": self.history,
            "elapsed_s": self.elapsed_s,
            "train_time_s": self.train_time_s,
            "samples_seen": self.samples_seen,
            "step_in_epoch": self.step_in_epoch,  # > 0: a checkpoint inside an epoch
            "epoch_loss_sum": self.epoch_loss_sum.detach().cpu(),
            "epoch_elapsed_s": self.epoch_elapsed_s,
            "logger_run_id": logger_run_id,
        }

    def save_checkpoint(self, writer: ckpt.CheckpointWriter, logger_run_id: Optional[str],
                        rng_ranks: Optional[list]) -> None:
        """ddp: rank 0 writes checkpoint.pt (in the background); fsdp2: every rank calls it and writes its
        shards of model, optimizer and average into a DCP directory, rank 0 the rest (benchmarks/strategy.py)."""
        if self.strategy == "fsdp2":
            state = self.state_dict(logger_run_id, rng_ranks)
            save_dcp(self.run_dir, {k: state.pop(k) for k in SHARDED_KEYS}, state, self.rank)
        elif self.rank == 0:
            writer.save(self.run_dir / ckpt.CHECKPOINT_FILE, self.state_dict(logger_run_id, rng_ranks))
            if self.stop.signum is not None:  # the other ranks exit after the next barrier: be on disk by then
                writer.wait()

    def load_checkpoint(self) -> Optional[dict[str, Any]]:
        """Resume from the run directory's checkpoint, if any (every rank calls it); returns the state loaded."""
        if self.strategy == "fsdp2":
            path = dcp_path(self.run_dir)
            if path is None:
                return None
            template = self.state_dict(None)  # this world size's shards: DCP reshards into them
            state = {**ckpt.load_checkpoint(path / TRAINER_STATE_FILE),
                     **load_dcp(path, {k: template[k] for k in SHARDED_KEYS})}
        else:
            path = self.run_dir / ckpt.CHECKPOINT_FILE
            if not path.exists():
                return None
            state = ckpt.load_checkpoint(path)
        if self.strategy == "fsdp2" and self.world_size > 1:  # each rank checks its own shards (e.g. a NaN in one):
            error = None                                      # all refuse together, none waits for the others
            try:
                self.load_state_dict(state)
            except (ValueError, RuntimeError) as err:
                error = err
            said = [None] * self.world_size
            torch.distributed.all_gather_object(said, None if error is None else f"{type(error).__name__}: {error}")
            if error is not None:
                raise error
            refused = next((f"rank {r}: {m}" for r, m in enumerate(said) if m is not None), None)
            if refused is not None:
                raise ResumeRefused(f"another rank refused this checkpoint ({refused})")
        else:
            self.load_state_dict(state)
        return state

    def _check_world_change(self, state: dict[str, Any], saved_world: int) -> None:
        """A checkpoint from another world size resumes only at an epoch end and with the same steps per epoch."""
        where = f"this checkpoint was written at world size {saved_world}, the run now has {self.world_size}"
        if int(state.get("step_in_epoch", 0)):
            raise ResumeRefused(f"{where}, inside epoch {int(state['epoch']) + 1} (step {state['step_in_epoch']}): "
                             "the epoch's examples are split another way at another world size, so it resumes "
                             f"only at world size {saved_world}; or resume at {saved_world} until an epoch end")
        saved_steps = int(state.get("steps_per_epoch", self.steps_per_epoch))
        if saved_steps != self.steps_per_epoch:
            raise ResumeRefused(f"{where}, and {saved_steps} steps per epoch then, {self.steps_per_epoch} now: the lr "
                             "and averaging schedules were laid out for the former; keep the global batch (task."
                             "batch_size x processes x trainer.grad_accum_steps) or cap trainer.max_steps_per_epoch")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("config")
        if saved is not None:  # whatever happened to result.json, one config never resumes another's work
            diffs = config_differences(comparable_config(saved),  # again: a checkpoint of older code kept more
                                       comparable_config(OmegaConf.to_container(self.cfg, resolve=True)))
            if diffs:
                raise ConfigMismatch(f"{self.run_dir / ckpt.CHECKPOINT_FILE} was written by a run with a different "
                                     "config:\n  " + "\n  ".join(diffs[:20]) + "\nUse another directory "
                                     "(out_dir=... or hydra.run.dir=...) or delete this one to start over.")
        missing = [k for k in ("model", "optimizer", "scheduler", "epoch", "global_step", "history") if k not in state]
        if missing:
            raise CorruptFile(f"{self.run_dir / ckpt.CHECKPOINT_FILE} lacks {missing}: not a checkpoint of this "
                              f"engine; {ckpt.RESTART}")
        if self.strategy == "fsdp2":
            load_sharded_state(self.model, self.optimizer, state["model"], state["optimizer"])
        else:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        if self.averager is not None:
            self.averager.load_state_dict(state["averager"])
        saved_riders = state.get("riders") or {}
        missing = [r.name for r in self.riders if r.name not in saved_riders]
        if missing:  # benchmarks.riders.plan only resumes the riders a checkpoint carries
            raise ResumeRefused(f"this checkpoint carries no state for the rider(s) {missing}: run them on their own")
        for rider in self.riders:
            saved_config = (state.get("rider_configs") or {}).get(rider.name)
            diffs = [] if saved_config is None else config_differences(
                comparable_config(saved_config), comparable_config(OmegaConf.to_container(rider.cfg, resolve=True)))
            if diffs:
                raise ConfigMismatch(f"the checkpoint's rider {rider.name} was made with a different config:\n  "
                                     + "\n  ".join(diffs[:20]) + f"\nDelete {rider.run_dir} and the checkpoint, "
                                     "or run it under another out_dir")
            rider.averager.load_state_dict(saved_riders[rider.name])
            rider.history = list(state["rider_histories"][rider.name])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        saved_world = int(state.get("world_size", self.world_size))
        if saved_world != self.world_size:
            self._check_world_change(state, saved_world)
        ranks = state.get("rng_ranks")
        rng = ranks[self.rank] if ranks is not None and saved_world == self.world_size else state["rng"]
        if saved_world == self.world_size:
            ckpt.set_rng_state(rng, self.generator)
        else:  # another world size: each rank a fresh stream of its own (the saved ones belong to other ranks)
            seed_everything(self.cfg.seed + 1_000_003 * (self.rank + 1) + 7_919 * int(state["epoch"]))
        self.step_in_epoch = int(state.get("step_in_epoch", 0))
        self.epoch_loss_sum = rng.get("epoch_loss_sum", state.get("epoch_loss_sum", torch.zeros((),
                                                                                               dtype=torch.float64)))
        self.epoch_elapsed_s = float(state.get("epoch_elapsed_s", 0.0))
        self._resume_rng = rng if self.step_in_epoch else None  # restored once the epoch reaches its step
        self.epoch, self.global_step = state["epoch"], state["global_step"]
        self.history = list(state["history"])
        self.elapsed_s, self.train_time_s = state["elapsed_s"], state["train_time_s"]
        self.samples_seen = state["samples_seen"]


# ------------------------------------------------------------------------------------------------ the run
def _check_rerun(run_dir: Path, config: dict) -> Optional[dict]:
    """The completed result to return instead of running, or None; raises ConfigMismatch on a different config."""
    previous = read_result(run_dir)
    if previous is None:
        return None
    checkpoint = run_dir / ckpt.CHECKPOINT_FILE
    # task.framework=mmdet|mmseg runs keep mmengine's checkpoint instead (benchmarks/openmmlab/common.py)
    framework_checkpoint = run_dir / ckpt.FRAMEWORK_CHECKPOINT_FILE
    saved = checkpoint.exists() or framework_checkpoint.exists() or dcp_path(run_dir) is not None
    if previous.get("status") in ("running", "failed") and not saved:
        return None  # ended before its first checkpoint: nothing to resume or to protect
    diffs = config_differences(comparable_config(previous.get("config") or {}), comparable_config(config))
    if diffs:
        raise ConfigMismatch(
            f"{run_dir} already holds a {previous.get('status')} run with a different config:\n  "
            + "\n  ".join(diffs[:20])
            + "\nUse another directory (out_dir=... or hydra.run.dir=...) or delete this one to start over."
        )
    if previous.get("status") != "completed":
        return None  # running or failed after a checkpoint: resume from it (a failure loses no finished epoch)
    redo = f"delete {run_dir} (or its result.json and weights/) to redo the run"
    weights = run_dir / "weights"
    for name in ["online.safetensors", *(["average.safetensors"] if previous.get("method_kwargs") is not None
                                         else [])]:
        verify(weights / name, redo)  # a completed run is skipped only with its weights intact
    return previous


def run(cfg: DictConfig, run_dir: Path | str, progress: Optional[Progress] = None) -> dict[str, Any]:
    """Train (or resume, or skip) one run in `run_dir`; returns its result.json content.

    A failure (exception, NaN/inf loss) is recorded in result.json as status "failed" with the traceback, then
    re-raised; callers that sweep catch it and go on.
    """
    return run_trajectory(cfg, run_dir, (), progress)[0]


def run_shared(members: Sequence[tuple[DictConfig, Path]], progress: Optional[Progress] = None) -> list[dict]:
    """Passive runs of one recipe and seed (benchmarks/riders.py) on as few trajectories as possible: completed
    members are skipped, the rest train once, riding on one primary. Returns every member's result in order; a
    failure is recorded in the result.json of the runs it ended (and not raised: the caller sweeps)."""
    check_shareable(members[0][0], [cfg for cfg, _ in members[1:]])
    results: dict[Path, dict] = {}
    while True:
        primary, riders, done = plan([(c, Path(d).absolute()) for c, d in members
                                      if Path(d).absolute() not in results])
        for run_dir, previous in done:  # completed: skipped, as `run` skips it (same config, intact weights)
            member_cfg = next(c for c, d in members if Path(d).absolute() == run_dir)
            try:
                previous = _check_rerun(run_dir, OmegaConf.to_container(member_cfg, resolve=True)) or previous
            except (ConfigMismatch, CorruptFile) as err:
                log.error("%s: %s", run_dir, err)
                previous = {**previous, "status": "failed", "error": str(err)}
            results[run_dir] = previous
            if previous.get("status") == "completed":
                log.info("%s: already completed, skipped", run_dir)
                if progress is not None:
                    progress.end({**previous, "status": "skipped"})
        if primary is None:
            return [results[Path(d).absolute()] for _, d in members]
        try:
            out = run_trajectory(primary[0], primary[1], riders, progress)
        except Exception as err:  # recorded in the result.json of every run it ended; reported failed here
            log.error("shared trajectory of %s: %s", primary[1], err)
            out = [{**(read_result(d) or {}), "status": "failed", "error": str(err)} for _, d in [primary, *riders]]
        for (_, run_dir), result in zip([primary, *riders], out):
            results[Path(run_dir)] = result


def run_trajectory(cfg: DictConfig, run_dir: Path | str, riders: Sequence[tuple[DictConfig, Path]] = (),
                   progress: Optional[Progress] = None) -> list[dict[str, Any]]:
    """Train (or resume, or skip) the run in `run_dir` carrying the passive `riders` (their configs and run
    directories; benchmarks/riders.py); returns [its result, each rider's result]."""
    run_dir = Path(run_dir).absolute()
    progress = progress or LogProgress()
    rank, world_size, local_rank, own_group = _distributed(cfg.trainer.dist_timeout_min,
                                                           need_group=cfg.trainer.strategy == "fsdp2")
    stop = StopRequest()
    # The engine's own loop checkpoints on SIGTERM/SIGUSR2; a framework runner keeps the process's handlers.
    engine_loop = frameworks.framework_of(cfg) == frameworks.ENGINE
    rider_list = [Rider(rider_cfg, Path(d).absolute()) for rider_cfg, d in riders]
    if rider_list:
        check_shareable(cfg, [r.cfg for r in rider_list])
        if not engine_loop:
            raise ValueError(f"task.framework={cfg.task.framework} runs train through another framework's runner: "
                             "riders (shared trajectories) need the engine's loop; run each method on its own")
    try:
        with _stop_signals(stop) if engine_loop else contextlib.nullcontext():
            with contextlib.ExitStack() as locks:
                error = None
                if rank == 0:  # only rank 0 writes, so only rank 0 holds the run directories' locks
                    try:
                        for directory in [run_dir, *(r.run_dir for r in rider_list)]:
                            directory.mkdir(parents=True, exist_ok=True)
                            locks.enter_context(RunLock(directory))  # a second writer stops here, naming the holder
                            for path in remove_stale_temporaries(directory):  # locked: no write is in flight
                                log.info("%s: removed %s, left by an interrupted write", directory, path)
                    except Exception as err:  # every rank hears of it (none waits for a rank 0 that left)
                        error = err
                _agree_with_rank0(world_size, error)  # the others read the files only once rank 0 has tidied them
                return _run(cfg, run_dir, progress, rank, world_size, local_rank, stop, rider_list)
    finally:
        if own_group:  # the one-process group made for fsdp2: gone with the run (a suite runs many in a process)
            torch.distributed.destroy_process_group()
            while _OWN_STORES:
                Path(_OWN_STORES.pop()).unlink(missing_ok=True)


@contextlib.contextmanager
def _stop_signals(stop: StopRequest):
    """SIGTERM/SIGUSR2 set `stop` (the trainer checkpoints at the next step and raises Preempted). On the way out
    the previous handlers come back, and the signal is handed on to them (submitit's requeue on USR2); a signal
    that arrived after training (during the last evaluation) is re-delivered once the run is saved."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}

    def handler(signum, frame):
        log.warning("signal %d: checkpointing at the next step, then stopping (rerun to resume)", signum)
        stop.signum = signum

    for s in STOP_SIGNALS:
        signal.signal(s, handler)
    preempted = False
    try:
        yield
    except Preempted:
        preempted = True
        raise
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        if stop.signum is not None:
            handed_on = previous.get(stop.signum)
            if callable(handed_on):  # e.g. submitit's requeue on USR2
                handed_on(stop.signum, None)
            elif not preempted and handed_on == signal.SIG_DFL:
                # it arrived after the last training step (evaluation, final weights): the run is complete and
                # saved; now do what the signal asked for
                signal.raise_signal(stop.signum)


def _run(cfg: DictConfig, run_dir: Path, progress: Progress, rank: int, world_size: int,
         local_rank: int, stop: StopRequest, riders: Sequence[Rider] = ()) -> list[dict[str, Any]]:
    config = OmegaConf.to_container(cfg, resolve=True)
    run_name = f"{cfg.task.name}/{cfg.method.name}/seed{cfg.seed}"
    previous = _check_rerun(run_dir, config)
    for rider in riders:  # a rider's directory holding another config is refused as a run's own would be
        _check_rerun(rider.run_dir, OmegaConf.to_container(rider.cfg, resolve=True))
    if previous is not None:
        log.info("%s: already completed in %s, skipped", run_name, run_dir)
        progress.end({**previous, "status": "skipped"})
        return [previous]
    if frameworks.framework_of(cfg) != frameworks.ENGINE:
        # The task trains through another framework's own runner (task.framework=mmdet|mmseg; benchmarks/
        # frameworks.py): validated as every run, options it does not follow refused, the same result.json.
        validate(cfg)
        result = frameworks.run(cfg, run_dir, world_size)
        progress.end(result)
        return [result]

    result = new_result(cfg)
    members = [str(cfg.method.name), *(r.name for r in riders)]
    if riders:
        result["trajectory"] = {"trained_by": str(cfg.method.name), "members": members}
        for rider in riders:
            rider.result = {**new_result(rider.cfg), "trajectory": {"trained_by": str(cfg.method.name),
                                                                     "trained_in": str(run_dir), "members": members}}
    logger: Optional[RunLogger] = None
    try:
        validate(cfg)
        for rider in riders:
            validate(rider.cfg)
        trainer = Trainer(cfg, run_dir, rank, world_size, local_rank, riders)
        trainer.stop = stop
        task = trainer.task
        shared = dict(dataset=task.dataset, headline=task.headline, higher_is_better=task.higher_is_better,
                      notes=list(task.notes),
                      runtime={**describe_runtime(trainer.device, world_size, trainer.precision),
                               "global_batch": trainer.global_batch, "peak_lr": trainer.peak_lr})
        result.update(shared, method_kwargs=trainer.method_kwargs)
        for rider in riders:
            rider.result.update(shared, method_kwargs=rider.method_kwargs,
                                notes=[*shared["notes"], f"trained on the trajectory of {cfg.method.name} "
                                                         f"({run_dir}), shared by {', '.join(members)}"])
        state = trainer.load_checkpoint()
        if rank == 0 and (riders or (run_dir / TRAJECTORY_FILE).exists()):  # after a load that worked: what the
            write_json_atomic(run_dir / TRAJECTORY_FILE, {"riders": members[1:],  # next checkpoint will carry
                                                         "rider_dirs": [str(r.run_dir) for r in riders]})
        if state is not None:
            log.info("%s: resuming after epoch %d (step %d) from %s", run_name, trainer.epoch, trainer.global_step,
                     run_dir)
        if rank == 0:
            logger = RunLogger(run_dir, cfg.logger.wandb, config, cfg.method.name, cfg.seed,
                               run_id=state["logger_run_id"] if state else None)
            if state is not None:
                logger.restart(trainer.history)
            result["history"] = trainer.history
            write_json_atomic(run_dir / RESULT_FILE, result)
            for rider in riders:
                ids = (state or {}).get("rider_logger_ids") or {}
                rider.logger = RunLogger(rider.run_dir, rider.cfg.logger.wandb,
                                         OmegaConf.to_container(rider.cfg, resolve=True), rider.name, cfg.seed,
                                         run_id=ids.get(rider.name))
                if state is not None:
                    rider.logger.restart(rider.history)
                rider.result["history"] = rider.history
                write_json_atomic(rider.run_dir / RESULT_FILE, rider.result)
        _train(trainer, cfg, run_dir, result, logger, progress, run_name)
    except (ResumeRefused, ConfigMismatch, CorruptFile) as err:  # nothing trained: every file stays as it was
        log.error("%s: %s", run_name, err)
        progress.end({**result, "status": "running"})
        raise
    except Preempted:  # checkpointed; result.json stays "running", so a rerun resumes
        log.warning("%s: stopped by a signal after its checkpoint; rerun the same command to resume", run_name)
        progress.end({**result, "status": "running"})
        raise
    except Exception as err:
        error = "".join(traceback.format_exception(err))
        for record, directory, run_logger in [(result, run_dir, logger),
                                              *((r.result, r.run_dir, r.logger) for r in riders)]:
            record.update(status="failed", error=error)
            if rank == 0:
                write_json_atomic(directory / RESULT_FILE, record)
                if run_logger is not None:
                    run_logger.finish(record)
        log.error("%s failed: %s", run_name, err)
        progress.end(result)
        raise
    progress.end(result)
    for rider in riders:
        progress.end(rider.result)
    return [result, *(r.result for r in riders)]


def _train(trainer: Trainer, cfg: DictConfig, run_dir: Path, result: dict, logger: Optional[RunLogger],
           progress: Progress, run_name: str) -> None:
    writer = ckpt.CheckpointWriter(cfg.trainer.checkpoint_in_background)
    try:
        _train_epochs(trainer, cfg, run_dir, result, logger, progress, run_name, writer)
    except BaseException:  # a checkpoint in flight is on disk before the run fails or stops for requeue; its
        try:               # own failure is logged, never put in place of the error that ended the run
            writer.wait()
        except RuntimeError as err:
            log.error("%s: %s", run_name, err)
        raise


def _train_epochs(trainer: Trainer, cfg: DictConfig, run_dir: Path, result: dict, logger: Optional[RunLogger],
                  progress: Progress, run_name: str, writer: ckpt.CheckpointWriter) -> None:
    epochs, task = cfg.trainer.epochs, trainer.task
    progress.start(run_name, epochs, trainer.steps_per_epoch, trainer.epoch)

    def checkpoint_inside_epoch() -> None:  # every rank calls it (the RNG states are gathered)
        trainer.epoch_elapsed_s = time.perf_counter() - start
        rng_ranks = trainer.rng_states() if trainer.world_size > 1 else None
        if cfg.trainer.checkpoint:
            trainer.save_checkpoint(writer, logger.run_id if logger else None, rng_ranks)
        _barrier(trainer.world_size)

    forks_workers = cfg.task.num_workers > 0 and not getattr(trainer.loader, "persistent_workers", False)
    while trainer.epoch < epochs:
        if forks_workers:  # no thread writing while the loader forks its workers for this epoch
            writer.wait()
        start = time.perf_counter() - trainer.epoch_elapsed_s  # a resumed epoch keeps the time it had run
        trainer.epoch_elapsed_s = 0.0
        train_loss = trainer.train_epoch(on_steps=progress.step, checkpoint=checkpoint_inside_epoch)
        trainer.epoch += 1
        switched = bool(trainer.averager.epoch_end()) if trainer.averager is not None else False
        if switched and task.on_switch is not None:
            task.on_switch()
        for rider in trainer.riders:
            if rider.averager.epoch_end():
                raise RuntimeError(f"method={rider.name} declares writes_model=False but wrote into the model at "
                                   f"the end of epoch {trainer.epoch}: it cannot ride on a shared trajectory")
        record: dict[str, Any] = {"epoch": trainer.epoch, "step": trainer.global_step, "train_loss": train_loss,
                                  "lr": trainer.optimizer.param_groups[0]["lr"], "switched": switched,
                                  "avg": None, "online": None}
        rider_avgs: dict[str, dict] = {}
        if trainer.epoch % cfg.trainer.eval_every == 0 or trainer.epoch == epochs:
            if trainer.rank == 0 or task.sharded_evaluation is not None:  # sharded: every rank, no one waits
                avg, online, reused = trainer.evaluate(switched)
                record.update(avg=avg, online=online, avg_reused_online=reused)
                rider_avgs = trainer.evaluate_riders()
            _barrier(trainer.world_size)
        trainer.elapsed_s += time.perf_counter() - start
        record["time_s"] = trainer.elapsed_s
        trainer.history.append(record)
        for rider in trainer.riders:  # the shared online record, with the rider's own average
            evaluated = record["online"] is not None
            rider.history.append({**record, "avg": rider_avgs.get(rider.name) if evaluated else None,
                                  **({"avg_reused_online": False} if evaluated else {})})
        rng_ranks = trainer.rng_states() if cfg.trainer.checkpoint and trainer.world_size > 1 else None
        if trainer.rank == 0:
            _fill_summary(trainer, result)
            write_json_atomic(run_dir / RESULT_FILE, result)
            logger.log_epoch(record)
            for rider in trainer.riders:
                _fill_summary(trainer, rider.result, rider.history)
                write_json_atomic(rider.run_dir / RESULT_FILE, rider.result)
                rider.logger.log_epoch(rider.history[-1])
        if cfg.trainer.checkpoint:  # rank 0 (ddp) or every rank (fsdp2)
            trainer.save_checkpoint(writer, logger.run_id if logger else None, rng_ranks)
        if trainer.rank == 0:
            progress.epoch(record)
        _barrier(trainer.world_size)
        if trainer.stop_agreed() and trainer.epoch < epochs:  # stopped at an epoch's end (any rank): saved above
            raise Preempted(trainer.stopped_at(trainer.steps_per_epoch, trainer.epoch))

    # End-of-training metrics: rank 0, or every rank when the task splits them (no one waits); then the weights
    # (fsdp2: gathered from the shards, by every rank). The riders first: the run itself is "completed" last.
    final_on_rank = task.final_evaluate is not None and (trainer.rank == 0 or task.final_evaluate_on_every_rank)
    for rider in trainer.riders:
        extra = trainer.final_metrics(rider.averager, rider.run_dir) if final_on_rank else None
        weights = trainer.weights(rider.averager)
        if trainer.rank == 0:
            _finish(trainer, rider.run_dir, rider.result, extra, weights, rider.history)
            write_json_atomic(rider.run_dir / RESULT_FILE, rider.result)
            rider.logger.finish(rider.result)
    extra = trainer.final_metrics() if final_on_rank else None
    weights = trainer.weights()
    if trainer.rank == 0:
        writer.wait()  # the last checkpoint is on disk (or its failure raised) before the run is "completed"
        _finish(trainer, run_dir, result, extra, weights)
        write_json_atomic(run_dir / RESULT_FILE, result)
        logger.finish(result)
    _barrier(trainer.world_size)


def _fill_summary(trainer: Trainer, result: dict, history: Optional[list] = None) -> None:
    """final / best / median_last / timings from the history so far (benchmarks.results.summarize); `history`:
    a rider's (default: the run's own)."""
    result["history"] = trainer.history if history is None else history
    summarize(result, wall_time_s=trainer.elapsed_s, samples=trainer.samples_seen * trainer.world_size,
              train_time_s=trainer.train_time_s, peak_memory_mb=peak_memory_mb(trainer.device),
              last_k=trainer.cfg.trainer.median_of_last)
    task, rate = trainer.task, result["throughput_samples_per_s"]
    if rate and (task.tokens_per_example or task.flops_per_example):
        flops = rate * task.flops_per_example if task.flops_per_example else None
        peak = peak_flops((result["runtime"] or {}).get("gpu"), trainer.precision)
        result["throughput"] = {
            "tokens_per_s": rate * task.tokens_per_example if task.tokens_per_example else None,
            "model_tflops_per_s": flops / 1e12 if flops else None,
            # model FLOPs utilisation: achieved training FLOP/s over the peak of all the run's GPUs
            "mfu": flops / (peak * trainer.world_size) if flops and peak else None,
        }


def _finish(trainer: Trainer, run_dir: Path, result: dict, extra: Optional[dict[str, float]],
            weights: dict[str, Any], history: Optional[list] = None) -> None:
    """End-of-training extras (`extra`: task.final_evaluate's metrics), weights files, status."""
    _fill_summary(trainer, result, history)
    if extra is not None:
        result["final"] = {**(result["final"] or {}), **extra}
    for name, module in weights.items():
        _save_weights(module, run_dir / "weights" / f"{name}.safetensors")
    result["status"] = "completed"
