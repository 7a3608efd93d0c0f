"""The engine owns placement: for every task, the model, the average and every tensor of a training step are on
the engine's device. Checked on PyTorch's `meta` device, which exists on CPU-only machines and raises on any
operation that mixes it with a CPU tensor (a tensor a task forgot to move)."""

from __future__ import annotations

import pytest
import torch

from benchmarks import engine
from benchmarks.recipes import compose_run
from benchmarks.tasks import TASKS

META = torch.device("meta")
# Tasks whose training step reads tensor values on the host by design, which the meta device cannot do: their model
# and average placement is checked here, the step itself by scripts/gpu_check.sh on CUDA.
HOST_READS = {"detection": "torchvision's detection models check for degenerate boxes with .any() on the host"}


@pytest.mark.parametrize("task", sorted(TASKS))
def test_a_training_step_runs_entirely_on_the_engines_device(task, tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "_device", lambda choice, local_rank, profile="quick": META)
    cfg, run_dir = compose_run(f"smoke/{task}", "sema", 0, str(tmp_path), ["logger.wandb.mode=disabled"])
    trainer = engine.Trainer(cfg, run_dir)
    on_cpu = [name for name, t in trainer.model.state_dict().items() if t.device != META]
    assert not on_cpu, f"{task}: model tensors left off the engine's device: {on_cpu[:5]} ({len(on_cpu)} in all)"
    average = [name for name, t in trainer.averager.average.state_dict().items() if t.device != META]
    assert not average, f"{task}: averaged tensors off the engine's device: {average[:5]}"
    if task in HOST_READS:
        pytest.skip(f"{task}: the step cannot run on meta ({HOST_READS[task]}); placement of model and average checked")
    loss = trainer.train_step(next(iter(trainer.loader)))  # raises if any tensor of the step is on the CPU
    assert loss.device == META and trainer.global_step == 1
