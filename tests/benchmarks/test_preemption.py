"""Checkpoints inside an epoch and stop signals: a run interrupted mid-epoch (killed, or stopped by SIGTERM after
its checkpoint) resumes from that step and ends bit for bit like a run that never stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from benchmarks import checkpoint as ckpt
from benchmarks import engine
from benchmarks.recipes import compose_run
from run_helpers import InterruptAtStep

FAST = ["logger.wandb.mode=disabled", "trainer.num_threads=1", "trainer.checkpoint_every_steps=3"]
KEYS = ("epoch", "step", "train_loss", "lr", "switched", "avg", "online")


def same_run(a_dir, b_dir) -> None:
    a, b = (json.loads((d / "result.json").read_text()) for d in (a_dir, b_dir))
    assert a["status"] == b["status"] == "completed"
    assert [{k: h[k] for k in KEYS} for h in a["history"]] == [{k: h[k] for k in KEYS} for h in b["history"]]
    for name in ("online.safetensors", "average.safetensors"):
        wa, wb = load_file(a_dir / "weights" / name), load_file(b_dir / "weights" / name)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), name


@pytest.mark.parametrize("extra", [[], ["trainer.data_on_device=true", "task.augment=true"]],
                         ids=["loader", "batches-on-device"])
def test_a_run_interrupted_inside_an_epoch_resumes_from_its_step_bit_for_bit(tmp_path, extra):
    cfg, straight = compose_run("smoke/classification", "sema", 0, str(tmp_path / "straight"), FAST + extra)
    engine.run(cfg, straight)
    cfg, run_dir = compose_run("smoke/classification", "sema", 0, str(tmp_path / "cut"), FAST + extra)
    with pytest.raises(KeyboardInterrupt):
        engine.run(cfg, run_dir, progress=InterruptAtStep(13))  # epoch 2, after its checkpoint at step 3
    state = ckpt.load_checkpoint(run_dir / ckpt.CHECKPOINT_FILE)
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (1, 3, 11)
    assert json.loads((run_dir / "result.json").read_text())["status"] == "running"
    engine.run(cfg, run_dir)
    same_run(straight, run_dir)


def test_sigterm_checkpoints_at_the_next_step_and_the_rerun_resumes_bit_for_bit(tmp_path):
    args = ["recipe=smoke/classification", "method=sema", "trainer.epochs=3", "trainer.max_steps_per_epoch=null",
            "task.batch_size=8",  # 179 steps per epoch: the signal lands inside epoch 2
            "logger.wandb.mode=disabled", "trainer.num_threads=1", "trainer.checkpoint_every_steps=1000"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cli = [sys.executable, "-m", "benchmarks.cli"]
    subprocess.run([*cli, *args, f"out_dir={tmp_path / 'straight'}"], check=True, env=env, capture_output=True)
    proc = subprocess.Popen([*cli, *args, f"out_dir={tmp_path / 'stopped'}"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    run_dir = next_run_dir(tmp_path / "stopped", proc)
    deadline = time.monotonic() + 120
    while not (run_dir / ckpt.CHECKPOINT_FILE).exists():  # epoch 1 is done: epoch 2 has begun
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.001)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "Preempted" in err
    state = ckpt.load_checkpoint(run_dir / ckpt.CHECKPOINT_FILE)
    # inside epoch 2, or (when the signal lands between epoch 1's checkpoint and epoch 2's first step) at its start
    assert state["epoch"] == 1 and 0 <= state["step_in_epoch"] < 179
    assert json.loads((run_dir / "result.json").read_text())["status"] == "running"
    resumed = subprocess.run([*cli, *args, f"out_dir={tmp_path / 'stopped'}"], env=env, capture_output=True,
                             text=True)
    assert resumed.returncode == 0, resumed.stderr
    same_run(tmp_path / "straight" / run_dir.relative_to(tmp_path / "stopped"), run_dir)


def next_run_dir(root, proc):
    deadline = time.monotonic() + 120
    while True:
        found = list(root.rglob("result.json"))
        if found:
            return found[0].parent
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it started training"
        time.sleep(0.01)


class SignalAtStep(InterruptAtStep):
    """Progress that sends this process SIGTERM once `at` steps are done (the engine's handler catches it)."""

    def step(self, steps):
        self.done += steps
        if self.done == self.at:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.parametrize("at, epoch, step_in_epoch", [(8, 1, 0), (5, 0, 5)])
def test_a_signal_stops_after_a_checkpoint_at_an_epoch_end_or_inside_one(tmp_path, at, epoch, step_in_epoch):
    cfg, straight = compose_run("smoke/classification", "sema", 0, str(tmp_path / "straight"), FAST)
    engine.run(cfg, straight)
    cfg, run_dir = compose_run("smoke/classification", "sema", 0, str(tmp_path / "stopped"), FAST)
    with pytest.raises(engine.Preempted, match=f"after step {at if epoch == 0 else 8} of epoch 1, checkpointed"):
        engine.run(cfg, run_dir, progress=SignalAtStep(at))
    state = ckpt.load_checkpoint(run_dir / ckpt.CHECKPOINT_FILE)
    assert (state["epoch"], state["step_in_epoch"]) == (epoch, step_in_epoch)  # step 8 is epoch 1's last step
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is gone again
    engine.run(cfg, run_dir)
    same_run(straight, run_dir)
