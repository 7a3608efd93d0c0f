"""The plug-in point for tasks: what a task runner hands the training engine.

A task is a module in `benchmarks/tasks/` with two things at top level:

* `Config`: a dataclass extending `TaskConfig` (its Hydra schema; one comment per field);
* `setup(cfg: Config, ctx: RunContext) -> TaskSetup`.

It is registered by one line in `benchmarks/tasks/__init__.py::TASKS`. Heavy dependencies (timm, pycocotools,
transformers, ...) are imported inside `setup`, never at module top level, so that `import benchmarks.tasks.x`
stays cheap and the config schema can be registered without the task's extra installed.

The engine owns everything that is the same for all tasks: the optimizer and schedule, the data loader (sampler,
seeding, DDP), the WA method, mixed precision, gradient clipping, checkpoints, logging and `result.json`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import torch
from torch import nn
from torch.utils.data import Dataset


@dataclass
class TaskConfig:
    """Fields every task has. Task-specific fields live in the task's own `Config` subclass."""

    name: str = "???"  # task name, one of benchmarks.tasks.TASKS
    dataset: str = "???"  # dataset key; each task lists the ones it accepts and rejects others with the list
    data_root: Optional[str] = None  # folder holding the real dataset; None = the embedded offline default
    model: str = "???"  # model name (timm name or a project model); each task lists the accepted ones
    batch_size: int = 128  # training batch size per process
    eval_batch_size: int = 256  # evaluation batch size
    num_workers: int = 0  # DataLoader worker processes (0 keeps CPU runs deterministic and light)
    max_train_samples: Optional[int] = None  # cap on training examples (smoke/quick profiles); None = all
    max_eval_samples: Optional[int] = None  # cap on evaluation examples; None = all


@dataclass
class RunContext:
    """Run-wide facts a task may need while building itself, derived once by the engine (a task never re-derives
    them from the config)."""

    device: torch.device  # where the model will train
    seed: int  # the run's seed; data generation and splits derive from it or from fixed dataset seeds
    out_dir: Path  # the run directory (sample grids, per-run artefacts)
    cache_dir: Path  # where embedded datasets are prepared once and reused (benchmarks.runtime.cache_dir)
    rank: int = 0  # process rank under torchrun
    world_size: int = 1  # number of processes under torchrun
    profile: str = "quick"  # smoke | quick | paper
    epochs: int = 1  # trainer.epochs: the run's length
    batch_size: int = 1  # task.batch_size: training examples per step and process
    drop_last: bool = True  # trainer.drop_last
    max_steps_per_epoch: Optional[int] = None  # trainer.max_steps_per_epoch: the cap on steps per epoch
    grad_accum_steps: int = 1  # trainer.grad_accum_steps: micro-batches of batch_size per optimizer step
    strategy: str = "ddp"  # trainer.strategy: ddp | fsdp2 (under fsdp2 every forward is a collective)

    @classmethod
    def of_run(cls, cfg: Any, device: torch.device, out_dir: Path, rank: int = 0, world_size: int = 1) -> "RunContext":
        """The context of the run `cfg` (a composed config): the one place its facts are read from the config."""
        from benchmarks.runtime import cache_dir

        t = cfg.trainer
        return cls(device=device, seed=cfg.seed, out_dir=Path(out_dir), cache_dir=cache_dir(), rank=rank,
                   world_size=world_size, profile=cfg.profile, epochs=t.epochs, batch_size=cfg.task.batch_size,
                   drop_last=t.drop_last, max_steps_per_epoch=t.max_steps_per_epoch,
                   grad_accum_steps=t.grad_accum_steps, strategy=t.strategy)

    def steps_per_epoch(self, num_examples: int) -> int:
        """Optimizer steps per epoch for a training set of `num_examples`, exactly as the engine will train."""
        from benchmarks.runtime import steps_per_epoch

        return steps_per_epoch(num_examples, self.batch_size, self.world_size, self.drop_last,
                               self.max_steps_per_epoch, self.grad_accum_steps)

    def total_steps(self, num_examples: int) -> int:
        """Optimizer steps of the whole run."""
        return self.epochs * self.steps_per_epoch(num_examples)


Batch = Any
LossFn = Callable[[nn.Module, Batch], torch.Tensor]
EvalFn = Callable[[nn.Module], dict[str, float]]


@dataclass
class TaskSetup:
    """Everything the engine needs to train and evaluate one task."""

    model: nn.Module  # the module the optimizer trains (all trainable parameters), built on the CPU: the engine
    #                   moves it (and so its average) to the run's device; batches arrive there too
    train_set: Dataset  # training examples; the engine builds the loader (sampler, seed, DDP)
    train_loss: LossFn  # (model, batch on device) -> scalar loss; the model is in train mode
    evaluate: EvalFn  # metrics of `model` as it is now; the engine sets eval mode and no_grad
    headline: str  # key in evaluate()'s result that the tables compare (e.g. "top1", "mae")
    higher_is_better: bool  # direction of the headline metric
    dataset: str  # dataset name as it should appear in results (say "offline"/"proxy" where it applies)
    collate_fn: Optional[Callable[[list], Batch]] = None  # DataLoader collate function; None = default
    averaged_module: Optional[nn.Module] = None  # the submodule the WA method averages; None = `model`
    after_step: Optional[Callable[[int], None]] = None  # task-owned per-step work after the WA update
    #                                                      (e.g. an SSL teacher's momentum update); arg = global step
    on_switch: Optional[Callable[[], None]] = None  # called right after the WA method wrote into the model
    final_evaluate: Optional[EvalFn] = None  # heavier end-of-training metrics (linear probe, FID) on the
    #                                         weights being reported; merged into result["final"]
    final_evaluate_on_every_rank: bool = False  # True: under torchrun every rank calls final_evaluate, which splits
    #                                          its work by ctx.rank / ctx.world_size (benchmarks.evaluation) and
    #                                          returns the whole metrics; False: rank 0 alone (the others wait)
    analysis_batches: Optional[Callable[[], Iterable[Batch]]] = None  # a fixed, seeded list of batches for
    #                                                   sema-analyze (loss landscapes, sharpness); None = first
    #                                                   batches of an unshuffled training loader
    param_groups: Optional[Callable[[nn.Module], list[dict]]] = None  # optimizer groups (e.g. no decay on
    #                                                                  norms/biases); None = one group
    sharded_evaluation: Optional[Any] = None  # a benchmarks.evaluation.ShardedEvaluation: under torchrun every rank
    #                                          evaluates its shard of the set (else rank 0 alone runs evaluate)
    shard_blocks: Optional[Callable[[nn.Module], list[nn.Module]]] = None  # trainer.strategy=fsdp2: the blocks
    #                                                   fully_shard wraps one by one (e.g. transformer layers),
    #                                                   then the model; None = the task does not offer fsdp2
    activation_checkpointing: Optional[Callable[[nn.Module], None]] = None  # trainer.activation_checkpointing:
    #                                                   turns it on in the model; None = not offered
    tokens_per_example: Optional[int] = None  # sequence models: tokens per training example (tokens/s)
    flops_per_example: Optional[float] = None  # training FLOPs (forward + backward) per example (model FLOPs
    #                                           utilisation in result.json)
    notes: list[str] = field(default_factory=list)  # caveats copied into result.json (e.g. "proxy FID")
