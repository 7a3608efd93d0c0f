"""task.framework=mmdet|mmseg runs resume like the engine's: a run killed (SIGKILL) after epoch 1 of 2 and rerun
continues from mmengine's epoch-end checkpoint and ends bit for bit where an uninterrupted run ends; a rerun with
another config is refused (ConfigMismatch) and a completed run is skipped (the engine's rules). Also: which
checkpoint a rerun resumes from, and the message hub stored as plain data (the checkpoint loads with
torch.load(weights_only=True)).

Needs OpenMMLab (bash scripts/install_openmmlab.sh .venv) for the end-to-end cases; SEMA_REQUIRE_OPENMMLAB=1 turns a
missing install into a failure."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from benchmarks.openmmlab import common
from benchmarks.recipes import compose_run

mmengine = pytest.importorskip("mmengine")  # a base dependency of the [mmengine] extra, present in the dev venv
if os.environ.get("SEMA_REQUIRE_OPENMMLAB") == "1":
    for _package in ("mmdet", "mmseg"):
        if importlib.util.find_spec(_package) is None:
            raise ImportError(f"SEMA_REQUIRE_OPENMMLAB=1 but {_package} is not installed: "
                              "run bash scripts/install_openmmlab.sh")
pytestmark = pytest.mark.openmmlab


def needs(package: str):
    return pytest.mark.skipif(importlib.util.find_spec(package) is None,
                              reason=f"{package} not installed (bash scripts/install_openmmlab.sh .venv)")


FAST = ["logger.wandb.mode=disabled", "trainer.num_threads=1"]
SEGMENTATION = [*FAST, "task.framework=mmseg", "task.model=fcn_resnet18"]  # 2 epochs x 2 steps (smoke)
DETECTION = [*FAST, "task.framework=mmdet"]  # RetinaNet-R18, 2 epochs x 4 steps (smoke)
CHILD = """
import sys
from pathlib import Path
from benchmarks import engine
from benchmarks.recipes import compose_run
cfg, _ = compose_run("smoke/" + {task!r}, {method!r}, 0, {out!r}, {overrides!r})
engine.run(cfg, Path({run_dir!r}))
"""


def kill_after_first_checkpoint(task: str, method: str, overrides: list[str], run_dir: Path) -> None:
    """Start the run in a child process and SIGKILL it as soon as its epoch-1 checkpoint is on disk."""
    code = CHILD.format(task=task, method=method, out=str(run_dir.parent), overrides=overrides, run_dir=str(run_dir))
    child = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "OMP_NUM_THREADS": "1"},
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoint = run_dir / common.CHECKPOINT_FILE
    deadline = time.monotonic() + 240
    while not checkpoint.exists():
        if child.poll() is not None:
            raise AssertionError(f"the run ended before its first checkpoint:\n{child.stderr.read().decode()}")
        assert time.monotonic() < deadline, "no checkpoint after 240 s"
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    child.wait()


def result_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "result.json").read_text())


def saved_state(run_dir: Path) -> dict:
    # The default torch.load (weights_only=True), as mmengine loads it: the checkpoint is plain data.
    return torch.load(run_dir / common.CHECKPOINT_FILE, map_location="cpu")


def without_time(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in record.items() if k != "time_s"} for record in history]


def assert_same_weights(dir_a: Path, dir_b: Path) -> None:
    for name in ("online.safetensors", "average.safetensors"):
        a, b = load_file(dir_a / "weights" / name), load_file(dir_b / "weights" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def check_killed_then_resumed(tmp_path: Path, task: str, overrides: list[str], steps_per_epoch: int) -> Path:
    """Uninterrupted run vs killed-after-epoch-1-and-rerun run of the same config: the same run, bit for bit (and
    in between, a rerun with another config is refused).

    Exact equality holds on CPU (one thread) because the resumed run restores everything the rest of the run
    depends on: model, optimizer (with each group's initial lr), epoch/iter counters (the lr schedule and the
    sampler's per-epoch shuffle follow from them), the averager, and the torch/numpy/Python RNG states (the random
    flip and the FCN head's dropout draw from them; without them the final weights differ by about 3e-2)."""
    from benchmarks import engine

    cfg, straight_dir = compose_run(f"smoke/{task}", "sema", 0, str(tmp_path / "straight"), overrides)
    straight = engine.run(cfg, straight_dir)
    assert straight["status"] == "completed"

    run_dir = tmp_path / "killed" / straight_dir.name
    kill_after_first_checkpoint(task, "sema", overrides, run_dir)
    killed = result_of(run_dir)
    assert killed["status"] == "running" and [r["epoch"] for r in killed["history"]] == [1]
    assert saved_state(run_dir)["sema_bench"]["history"] == killed["history"]
    assert not (run_dir / "checkpoint.pt").exists()  # only mmengine's checkpoint protects this run

    # Another config in this directory is refused and touches nothing.
    before = (run_dir / "result.json").read_bytes(), (run_dir / common.CHECKPOINT_FILE).read_bytes()
    other, _ = compose_run(f"smoke/{task}", "sema", 0, str(tmp_path / "other"), [*overrides, "optim.lr=0.02"])
    with pytest.raises(engine.ConfigMismatch, match="optim.lr"):
        engine.run(other, run_dir)
    assert ((run_dir / "result.json").read_bytes(), (run_dir / common.CHECKPOINT_FILE).read_bytes()) == before

    resumed = engine.run(cfg, run_dir)
    assert resumed["status"] == "completed" == result_of(run_dir)["status"]
    assert [r["epoch"] for r in resumed["history"]] == [1, 2]
    assert resumed["history"][0] == killed["history"][0]  # epoch 1 was restored, not trained again (time_s too)
    assert without_time(resumed["history"]) == without_time(straight["history"])
    assert resumed["final"] == straight["final"] and resumed["best"] == straight["best"]
    assert_same_weights(straight_dir, run_dir)
    # Like the engine's checkpoint.pt, the last checkpoint stays; its averager made one update per training step.
    final_state = saved_state(run_dir)
    assert final_state["sema"]["step"] == 2 * steps_per_epoch == resumed["history"][-1]["step"]
    assert final_state["meta"]["epoch"] == 2
    return run_dir


@pytest.mark.slow
@needs("mmseg")
def test_mmseg_run_killed_after_epoch_1_resumes_bit_for_bit(tmp_path, monkeypatch):
    from benchmarks import engine

    monkeypatch.setenv("SEMA_BENCH_CACHE", str(tmp_path / "cache"))
    run_dir = check_killed_then_resumed(tmp_path, "segmentation", SEGMENTATION, steps_per_epoch=2)

    # A completed run is skipped: nothing trains, nothing is rewritten.
    before = (run_dir / "result.json").read_bytes()
    checkpoint_written = (run_dir / common.CHECKPOINT_FILE).stat().st_mtime_ns
    cfg, _ = compose_run("smoke/segmentation", "sema", 0, str(tmp_path / "killed"), SEGMENTATION)
    assert engine.run(cfg, run_dir) == json.loads(before)
    assert (run_dir / "result.json").read_bytes() == before
    assert (run_dir / common.CHECKPOINT_FILE).stat().st_mtime_ns == checkpoint_written


@pytest.mark.slow
@needs("mmseg")
def test_mmseg_failure_at_the_final_save_resumes_from_the_last_checkpoint(tmp_path, monkeypatch):
    """A full disk at the final weights save marks the run failed but keeps its epoch-2 checkpoint; the rerun
    resumes from it (nothing is trained again) and ends with the straight run's weights, each with its digest. The
    checkpoint carries the config: with result.json gone, another config is still refused."""
    import errno

    import safetensors.torch

    from benchmarks import engine
    from benchmarks.integrity import verify

    monkeypatch.setenv("SEMA_BENCH_CACHE", str(tmp_path / "cache"))
    cfg, straight_dir = compose_run("smoke/segmentation", "sema", 0, str(tmp_path / "straight"), SEGMENTATION)
    straight = engine.run(cfg, straight_dir)
    run_dir = tmp_path / "full" / straight_dir.name
    real_save = safetensors.torch.save_model

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_model", full_disk)
    with pytest.raises(OSError, match="No space left"):
        engine.run(cfg, run_dir)
    monkeypatch.setattr(safetensors.torch, "save_model", real_save)
    assert result_of(run_dir)["status"] == "failed" and saved_state(run_dir)["meta"]["epoch"] == 2
    assert not any((run_dir / "weights").glob("*.safetensors"))

    saved_result = (run_dir / "result.json").read_bytes()
    (run_dir / "result.json").unlink()  # whatever happens to result.json, the checkpoint's config is checked
    other, _ = compose_run("smoke/segmentation", "sema", 0, str(tmp_path / "other"), [*SEGMENTATION, "optim.lr=0.02"])
    with pytest.raises(engine.ConfigMismatch, match="optim.lr"):
        engine.run(other, run_dir)
    assert not (run_dir / "result.json").exists()  # the refused run wrote nothing in the owner's place

    resumed = engine.run(cfg, run_dir)  # the owner's rerun resumes from the checkpoint, result.json or not
    assert resumed["status"] == "completed"
    assert resumed["history"] == json.loads(saved_result)["history"]  # restored, not trained again
    assert without_time(resumed["history"]) == without_time(straight["history"])
    assert_same_weights(straight_dir, run_dir)
    for name in ("online.safetensors", "average.safetensors"):
        assert (run_dir / "weights" / f"{name}.sha256").exists()
        verify(run_dir / "weights" / name, "unexpected")


@pytest.mark.slow
@needs("mmdet")
def test_mmdet_run_killed_after_epoch_1_resumes_bit_for_bit(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMA_BENCH_CACHE", str(tmp_path / "cache"))
    check_killed_then_resumed(tmp_path, "detection", DETECTION, steps_per_epoch=4)


def test_an_interrupted_or_failed_run_resumes_from_its_verified_checkpoint(tmp_path):
    from benchmarks.integrity import CorruptFile, write_verified

    checkpoint = tmp_path / common.CHECKPOINT_FILE
    assert common.resume_point(tmp_path) is None  # a new directory
    write_verified(checkpoint, lambda tmp: Path(tmp).write_bytes(b"an epoch-end checkpoint"))
    for status in ("running", "failed"):  # a failure after a good checkpoint loses no finished epoch (the engine's)
        (tmp_path / "result.json").write_text(json.dumps({"status": status}))
        assert common.resume_point(tmp_path) == checkpoint
    checkpoint.write_bytes(b"an epoch-end checkpoinT")  # one flipped bit: named, and kept for the user to look at
    with pytest.raises(CorruptFile, match=f"{checkpoint} is damaged.*delete it to restart the run from epoch 0"):
        common.resume_point(tmp_path)
    assert checkpoint.exists()
    checkpoint.unlink()
    assert common.resume_point(tmp_path) is None  # killed before its first checkpoint: starts over


def test_message_hub_round_trips_through_a_weights_only_checkpoint(tmp_path):
    import numpy as np
    from mmengine.logging import MessageHub

    hub = MessageHub.get_instance("sema-bench-resume-test")
    for value in (0.5, 0.25, 2.0):
        hub.update_scalar("train/loss", value)
    hub.update_info("eta", np.float64(12.5))  # mmengine stores numpy scalars like this one
    hub.update_info("iter", 3)
    torch.save(common._plain_message_hub(hub.state_dict()), tmp_path / "hub.pth")
    loaded = common._mmengine_message_hub(torch.load(tmp_path / "hub.pth", weights_only=True))

    restored = MessageHub.get_instance("sema-bench-resume-test-restored")
    restored.load_state_dict(loaded)
    buffer = restored.get_scalar("train/loss")
    assert buffer.data[0].tolist() == [0.5, 0.25, 2.0] and buffer.mean() == pytest.approx(2.75 / 3)
    assert restored.get_info("eta") == 12.5 and restored.get_info("iter") == 3
