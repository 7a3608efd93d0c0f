"""Shared trajectories (benchmarks/riders.py): passive methods riding on one run give, per method, the same
result.json and weights as separate runs, bit for bit, also after a kill and resume; methods that write into the
model, or configs that differ, are refused."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from benchmarks import checkpoint as ckpt
from benchmarks import engine
from benchmarks.recipes import compose_run
from benchmarks.riders import TRAJECTORY_FILE, check_shareable, plan
from run_helpers import InterruptAtStep

FAST = ["logger.wandb.mode=disabled", "trainer.num_threads=1", "trainer.checkpoint_every_steps=3"]
KEYS = ("epoch", "step", "train_loss", "lr", "switched", "avg", "online")
PASSIVE = ("baseline", "ema", "swa", "power_ema")


def members(root, methods=PASSIVE, extra=()):
    return [compose_run("smoke/classification", m, 0, str(root), [*FAST, *extra]) for m in methods]


def assert_same_run(a_dir, b_dir) -> None:
    a, b = (json.loads((d / "result.json").read_text()) for d in (a_dir, b_dir))
    assert a["status"] == b["status"] == "completed" and a["method"] == b["method"]
    assert [{k: h[k] for k in KEYS} for h in a["history"]] == [{k: h[k] for k in KEYS} for h in b["history"]]
    for key in ("final", "final_online", "best", "median_last", "method_kwargs"):
        assert a[key] == b[key], key
    assert {**a["config"], "out_dir": None} == {**b["config"], "out_dir": None}
    names = ["online.safetensors"] + (["average.safetensors"] if a["method"] != "baseline" else [])
    for name in names:
        wa, wb = load_file(a_dir / "weights" / name), load_file(b_dir / "weights" / name)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), name


def test_a_shared_trajectory_gives_each_method_the_result_of_its_own_run(tmp_path):
    shared = members(tmp_path / "shared")
    results = engine.run_shared(shared)
    assert [r["method"] for r in results] == list(PASSIVE) and {r["status"] for r in results} == {"completed"}
    for (_, shared_dir), (cfg, alone_dir) in zip(shared, members(tmp_path / "alone")):
        engine.run(cfg, alone_dir)
        assert_same_run(shared_dir, alone_dir)
    rider = json.loads((shared[1][1] / "result.json").read_text())
    assert rider["trajectory"] == {"trained_by": "baseline", "trained_in": str(shared[0][1]),
                                   "members": list(PASSIVE)}
    assert json.loads((shared[0][1] / TRAJECTORY_FILE).read_text())["riders"] == list(PASSIVE[1:])
    again = engine.run_shared(shared)  # everything completed: skipped, nothing trains
    assert [r["final"] for r in again] == [r["final"] for r in results]


def test_each_rider_of_a_generation_trajectory_gets_the_sample_grid_of_its_own_average(tmp_path, monkeypatch):
    """Artefacts of the final evaluation (the generation task's samples.png) go to the run directory of the
    weights being evaluated: the same file, byte for byte, as a run of that method alone writes."""
    monkeypatch.setenv("SEMA_BENCH_CACHE", str(tmp_path / "cache"))
    shared = [compose_run("smoke/generation", m, 0, str(tmp_path / "shared"), FAST) for m in ("baseline", "ema")]
    engine.run_shared(shared)
    for (_, shared_dir), method in zip(shared, ("baseline", "ema")):
        cfg, alone_dir = compose_run("smoke/generation", method, 0, str(tmp_path / "alone"), FAST)
        engine.run(cfg, alone_dir)
        assert (shared_dir / "samples.png").read_bytes() == (alone_dir / "samples.png").read_bytes(), method
    assert (shared[0][1] / "samples.png").read_bytes() != (shared[1][1] / "samples.png").read_bytes()


def test_a_killed_shared_trajectory_resumes_every_rider_bit_for_bit(tmp_path):
    shared = members(tmp_path / "shared")
    primary, riders = shared[0], shared[1:]
    with pytest.raises(KeyboardInterrupt):
        engine.run_trajectory(*primary, riders, progress=InterruptAtStep(13))  # epoch 2, after its step-3 save
    state = ckpt.load_checkpoint(primary[1] / ckpt.CHECKPOINT_FILE)
    assert (state["epoch"], state["step_in_epoch"]) == (1, 3) and set(state["riders"]) == {"ema", "swa", "power_ema"}
    assert {json.loads((d / "result.json").read_text())["status"] for _, d in shared} == {"running"}
    # The rerun plans from the disk: baseline's checkpoint carries the three riders, so it resumes them all.
    assert plan(list(reversed(shared)))[0][1] == primary[1]
    engine.run_shared(shared)
    for (_, shared_dir), (cfg, alone_dir) in zip(shared, members(tmp_path / "alone")):
        engine.run(cfg, alone_dir)
        assert_same_run(shared_dir, alone_dir)


def test_completed_members_are_skipped_and_the_rest_share_a_new_trajectory(tmp_path):
    group = members(tmp_path, ("baseline", "ema", "lawa"))
    engine.run(*group[1])  # ema already ran on its own
    primary, riders, done = plan(group)
    assert primary[1] == group[0][1] and [d for _, d in riders] == [group[2][1]] and [d for d, _ in done] == [
        group[1][1]]


def test_an_interrupted_trajectory_is_resumed_whether_its_checkpoint_is_a_file_or_an_fsdp2_dcp_directory(tmp_path):
    from benchmarks.strategy import DCP_DIR

    group = members(tmp_path, ("baseline", "ema", "swa"))
    for kind in ("file", "dcp"):  # the ema run holds the interrupted trajectory, carrying swa
        ema_dir = group[1][1]
        ema_dir.mkdir(parents=True, exist_ok=True)
        (ema_dir / TRAJECTORY_FILE).write_text(json.dumps({"riders": ["swa"]}))
        if kind == "file":
            (ema_dir / ckpt.CHECKPOINT_FILE).write_bytes(b"a checkpoint")
        else:
            (ema_dir / ckpt.CHECKPOINT_FILE).unlink()
            (ema_dir / DCP_DIR).mkdir()
        primary, riders, _ = plan(group)
        assert primary[1] == ema_dir and [d for _, d in riders] == [group[2][1]], kind


def test_methods_that_write_into_the_model_or_other_configs_cannot_share(tmp_path):
    base, sema = members(tmp_path, ("baseline", "sema"))
    with pytest.raises(ValueError, match="method=sema writes into the model"):
        check_shareable(base[0], [sema[0]])
    other, _ = compose_run("smoke/classification", "ema", 0, str(tmp_path), [*FAST, "optim.lr=0.0123"])
    with pytest.raises(ValueError, match=r"cannot ride on method=baseline's trajectory: their configs differ in\n"
                                         r"  optim.lr"):
        check_shareable(base[0], [other])
    ema, lawa = members(tmp_path, ("ema", "lawa"))
    with pytest.raises(ValueError, match="listed twice"):
        check_shareable(base[0], [ema[0], ema[0]])
    with pytest.raises(ValueError, match="method=baseline has no average to carry: it cannot ride"):
        check_shareable(ema[0], [base[0]])
    assert plan([ema, base, lawa])[0][1] == base[1]  # the baseline trains whenever it is to run


def test_the_command_line_carries_riders_into_the_directories_their_own_runs_use(tmp_path):
    import subprocess
    import sys

    args = [sys.executable, "-m", "benchmarks.cli", "recipe=smoke/classification", "method=baseline",
            f"out_dir={tmp_path}", *FAST]
    subprocess.run([*args, "riders=[ema,lawa]"], check=True, capture_output=True, text=True)
    runs = tmp_path / "smoke" / "classification"
    shared = {m: json.loads((runs / m / "seed0" / "result.json").read_text()) for m in ("baseline", "ema", "lawa")}
    assert shared["lawa"]["trajectory"]["members"] == ["baseline", "ema", "lawa"]
    assert (runs / "lawa" / "seed0" / ".hydra" / "config.yaml").exists()
    alone = subprocess.run([*args[:4], "method=lawa", *args[5:]], check=True, capture_output=True, text=True)
    assert "already completed" in alone.stderr + alone.stdout  # the rider is a run: a rerun of it skips
    refused = subprocess.run([*args, "riders=[sema]"], capture_output=True, text=True)
    assert refused.returncode != 0 and "method=sema writes into the model" in refused.stderr


def test_riders_each_log_their_own_offline_wandb_run(tmp_path):
    shared = [compose_run("smoke/classification", m, 0, str(tmp_path), ["logger.wandb.mode=offline",
                                                                           "trainer.num_threads=1"])
              for m in ("baseline", "ema")]
    assert [r["status"] for r in engine.run_shared(shared)] == ["completed", "completed"]
    for _, run_dir in shared:  # one process, two live wandb runs (reinit="create_new"), one folder each
        assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
