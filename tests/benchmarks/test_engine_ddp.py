"""Data parallel through torchrun (gloo, 2 CPU processes): both ranks train, rank 0 alone writes the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
@pytest.mark.ddp
def test_torchrun_two_processes(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "benchmarks.cli", "recipe=smoke/classification", "method=sema", f"out_dir={tmp_path}", "logger.wandb.mode=disabled",
           "trainer.num_threads=1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_dir = tmp_path / "smoke" / "classification" / "sema" / "seed0"
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "completed" and [h["epoch"] for h in result["history"]] == [1, 2]
    assert [h["step"] for h in result["history"]] == [8, 16]  # steps per process: each rank sees half the data
    assert len((run_dir / "log.jsonl").read_text().splitlines()) == 2  # one writer, no duplicate lines
    # the recipe's lr is for one process of 32: two processes train a global batch of 64 at twice the lr
    runtime = result["runtime"]
    assert (runtime["world_size"], runtime["global_batch"], runtime["peak_lr"]) == (2, 64, 0.1)
    # each rank's own RNG states are checkpointed (and restored by that rank on resume)
    import torch

    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    ranks = state["rng_ranks"]
    assert len(ranks) == 2 and not torch.equal(ranks[0]["torch"], ranks[1]["torch"])
