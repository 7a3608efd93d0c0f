"""The training engine, in process: result.json contents, evaluation of both weights, schedule, failures, reruns."""

from __future__ import annotations

import json
from pathlib import Path
import math

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from benchmarks import engine
from benchmarks.optim import lr_multiplier
from benchmarks.runtime import to_device
from benchmarks.results import read_result
from benchmarks.recipes import compose_run

FAST = ["logger.wandb.mode=disabled", "trainer.num_threads=1"]


def smoke(tmp_path, method="sema", *extra):
    return compose_run("smoke/classification", method, 0, str(tmp_path), [*FAST, *extra])


def test_sema_smoke_run_writes_the_documented_result(tmp_path):
    cfg, run_dir = smoke(tmp_path, "sema")
    assert run_dir == tmp_path / "smoke" / "classification" / "sema" / "seed0"
    result = engine.run(cfg, run_dir)
    on_disk = json.loads((run_dir / "result.json").read_text())
    assert on_disk == json.loads(json.dumps(result))
    assert on_disk["status"] == "completed" and on_disk["error"] is None
    assert (on_disk["task"], on_disk["method"], on_disk["seed"], on_disk["profile"]) == (
        "classification", "sema", 0, "smoke")
    assert on_disk["headline"] == "top1" and on_disk["higher_is_better"] is True
    assert on_disk["config"]["trainer"]["epochs"] == 2 and on_disk["config"]["logger"]["wandb"]["mode"] == "disabled"
    history = on_disk["history"]
    assert [h["epoch"] for h in history] == [1, 2] and [h["step"] for h in history] == [8, 16]
    # smoke: switch_start=1 -> no switch after epoch 1 (both weights evaluated), a switch after epoch 2 (the
    # model then equals the average, so the averaged evaluation is reused, not recomputed).
    assert [h["switched"] for h in history] == [False, True]
    assert history[0]["avg"] != history[0]["online"] and history[0]["avg_reused_online"] is False
    assert history[1]["avg"] == history[1]["online"] and history[1]["avg_reused_online"] is True
    assert on_disk["final"] == history[-1]["avg"] and on_disk["final_online"] == history[-1]["online"]
    best = max(history, key=lambda h: h["avg"]["top1"])
    assert on_disk["best"] == best["avg"] and on_disk["best_epoch"] == best["epoch"]
    assert set(on_disk["provenance"]) >= {"git_commit", "git_dirty", "command", "packages", "hardware", "date"}
    assert on_disk["throughput_samples_per_s"] > 0 and on_disk["wall_time_s"] > 0
    # weights: online == the model (== the average after the final switch), average present for averaging methods
    online, average = (load_file(run_dir / "weights" / f) for f in ("online.safetensors", "average.safetensors"))
    assert online.keys() == average.keys()
    assert all(torch.equal(online[k].float(), average[k].float()) for k in online if online[k].is_floating_point())
    logged = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [row["avg/top1"] for row in logged] == [h["avg"]["top1"] for h in history]


def test_baseline_reports_the_model_and_saves_no_average(tmp_path):
    cfg, run_dir = smoke(tmp_path, "baseline")
    result = engine.run(cfg, run_dir)
    assert all(h["avg"] is None for h in result["history"])
    assert result["final"] == result["final_online"] == result["history"][-1]["online"]
    assert not (run_dir / "weights" / "average.safetensors").exists()


def test_ema_evaluates_average_and_model_separately(tmp_path):
    cfg, run_dir = smoke(tmp_path, "ema")
    result = engine.run(cfg, run_dir)
    assert all(not h["switched"] and not h["avg_reused_online"] for h in result["history"])
    assert result["final"] != result["final_online"]  # decay 0.9 over 16 steps: clearly different weights


def test_averaging_does_not_change_the_online_trajectory(tmp_path):
    # EMA evaluates twice per epoch and the baseline once; evaluation must not consume the training RNG (random
    # augmentation here), so the online model of an EMA run is the baseline's, bit for bit.
    extra = ("task.augment=true", "trainer.epochs=3")
    runs = [smoke(tmp_path, method, *extra) for method in ("baseline", "ema")]
    base, ema = (engine.run(cfg, run_dir) for cfg, run_dir in runs)
    assert [h["train_loss"] for h in ema["history"]] == [h["train_loss"] for h in base["history"]]
    assert [h["online"] for h in ema["history"]] == [h["online"] for h in base["history"]]
    weights = [load_file(run_dir / "weights" / "online.safetensors") for _, run_dir in runs]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_evaluation_frequency_does_not_change_training(tmp_path):
    extra = ("task.augment=true", "trainer.epochs=3")
    every = engine.run(*smoke(tmp_path / "a", "ema", *extra, "trainer.eval_every=1"))
    last = engine.run(*smoke(tmp_path / "b", "ema", *extra, "trainer.eval_every=3"))
    assert every["history"][-1]["train_loss"] == last["history"][-1]["train_loss"]
    assert every["final"] == last["final"] and every["final_online"] == last["final_online"]


def test_completed_run_is_skipped(tmp_path):
    cfg, run_dir = smoke(tmp_path, "baseline")
    first = engine.run(cfg, run_dir)
    stamp = (run_dir / "result.json").stat().st_mtime_ns
    again = engine.run(cfg, run_dir)
    assert again == json.loads(json.dumps(first))
    assert (run_dir / "result.json").stat().st_mtime_ns == stamp


def test_a_different_config_in_the_same_directory_is_refused(tmp_path):
    cfg, run_dir = smoke(tmp_path, "baseline")
    engine.run(cfg, run_dir)
    changed = OmegaConf.merge(cfg, {"trainer": {"epochs": 3}})
    with pytest.raises(engine.ConfigMismatch, match=r"trainer.epochs: 2 -> 3"):
        engine.run(changed, run_dir)


def test_nan_loss_fails_the_run_and_a_rerun_starts_over(tmp_path):
    cfg, run_dir = smoke(tmp_path, "sema", "optim.lr=1e30")
    with pytest.raises(engine.NonFiniteLoss, match="training loss became nan"):
        engine.run(cfg, run_dir)
    failed = read_result(run_dir)
    assert failed["status"] == "failed" and "NonFiniteLoss" in failed["error"]
    assert failed["final"] is None and not (run_dir / "checkpoint.pt").exists()
    with pytest.raises(engine.NonFiniteLoss):  # redone from scratch (deterministically failing again)
        engine.run(cfg, run_dir)


def test_invalid_values_are_recorded_with_the_allowed_choices(tmp_path):
    cfg, run_dir = smoke(tmp_path, "sema", "optim.name=lion")
    with pytest.raises(ValueError, match="optim.name='lion' is not allowed; choose one of: sgd, adamw, adam"):
        engine.run(cfg, run_dir)
    assert read_result(run_dir)["status"] == "failed"
    cfg, run_dir = smoke(tmp_path / "b", "sema", "task.dataset=mnist")
    with pytest.raises(ValueError, match="task.dataset='mnist' is not allowed; choose one of: fashion_mnist, digits"):
        engine.run(cfg, run_dir)


def test_lr_schedule_matches_hand_computed_values():
    optim = OmegaConf.create({"warmup_epochs": 1, "min_lr": 0.01, "lr": 0.1, "schedule": "cosine",
                              "milestones": [2], "gamma": 0.1})
    f = lr_multiplier(optim, steps_per_epoch=4, total_steps=12)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]  # linear warm-up over the first 4 steps
    assert f(4) == pytest.approx(1.0) and f(12) == pytest.approx(0.1)  # cosine from 1 down to min_lr / lr
    assert f(8) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    optim.schedule, optim.warmup_epochs = "multistep", 0
    f = lr_multiplier(optim, steps_per_epoch=4, total_steps=12)
    assert [f(7), f(8)] == [1.0, pytest.approx(0.1)]
    optim.schedule, optim.poly_power = "poly", 0.9  # mmcv's PolyLR: (lr - min) (1 - s / T) ** 0.9 + min
    f = lr_multiplier(optim, steps_per_epoch=4, total_steps=12)
    assert [0.1 * f(s) for s in (0, 6, 12)] == pytest.approx([0.1, 0.09 * 0.5**0.9 + 0.01, 0.01])


@pytest.mark.parametrize("total", [10, 37])
def test_the_onecycle_schedule_equals_torchs_one_cycle_lr(total):
    optim = OmegaConf.create({"warmup_epochs": 0, "min_lr": 0.0, "lr": 0.01, "schedule": "onecycle", "milestones": [],
                              "gamma": 0.1, "onecycle_pct": 0.3, "onecycle_div": 25.0, "onecycle_final_div": 1e4})
    f = lr_multiplier(optim, steps_per_epoch=5, total_steps=total)
    sgd = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.01)
    torch_lrs = []
    scheduler = torch.optim.lr_scheduler.OneCycleLR(sgd, max_lr=0.01, total_steps=total, cycle_momentum=False)
    for _ in range(total):
        torch_lrs.append(sgd.param_groups[0]["lr"])
        sgd.step()
        scheduler.step()
    assert [0.01 * f(s) for s in range(total)] == pytest.approx(torch_lrs, rel=1e-9, abs=1e-15)
    assert f(0) == pytest.approx(1 / 25) and f(total - 1) == pytest.approx(1 / 25 / 1e4)


def test_lars_adapts_only_the_groups_with_weight_decay():
    from benchmarks.optim import build_optimizer

    w, b = torch.nn.Parameter(torch.full((2, 2), 3.0)), torch.nn.Parameter(torch.ones(2))
    optim = OmegaConf.create({"name": "lars", "lr": 1.0, "momentum": 0.0, "weight_decay": 0.5})
    lars = build_optimizer(optim, [{"params": [w]}, {"params": [b], "weight_decay": 0.0}])
    w.grad, b.grad = torch.ones(2, 2), torch.ones(2)
    lars.step()
    # w: g + wd w = 2.5 everywhere; trust 0.001 * |w| / (|g| + wd |w|) = 0.001 * 6 / (2 + 3); step lr x trust x 2.5
    assert torch.allclose(w, torch.full((2, 2), 3.0 - 0.001 * 6 / 5 * 2.5))
    assert torch.allclose(b, torch.zeros(2))  # no decay, no trust ratio: a plain SGD step of lr x g


def test_batch_helpers():
    batch = {"x": torch.zeros(5, 2), "meta": [torch.ones(5)], "name": "a"}
    assert engine.batch_size_of(batch) == 5 and engine.batch_size_of((torch.zeros(()), torch.ones(3))) == 3
    moved = to_device(batch, torch.device("cpu"))
    assert moved["name"] == "a" and torch.equal(moved["meta"][0], batch["meta"][0])


def test_grad_clip_bounds_every_update(tmp_path):
    # SGD without momentum or weight decay: each step moves the weights by lr * clipped gradient, so one epoch of
    # 8 steps moves no parameter by more than 8 * lr * clip.
    cfg, run_dir = smoke(tmp_path, "baseline", "trainer.grad_clip=1e-3", "optim.momentum=0", "optim.weight_decay=0",
                         "optim.schedule=constant")
    trainer = engine.Trainer(cfg, run_dir)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train_epoch()
    moved = max((p.detach() - b).abs().max().item() for p, b in zip(trainer.model.parameters(), before))
    assert 0 < moved <= 8 * 0.05 * 1e-3 * (1 + 1e-5)


@pytest.mark.slow
def test_wandb_offline_logs_locally_and_keeps_its_run_id(tmp_path):
    cfg, run_dir = compose_run("smoke/classification", "ema", 0, str(tmp_path),
                               ["logger.wandb.mode=offline", "trainer.num_threads=1"])
    engine.run(cfg, run_dir)
    run_id = (run_dir / "wandb_run_id.txt").read_text().strip()
    offline_runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1 and offline_runs[0].name.endswith(run_id)


def test_engine_overhead_script_runs():
    from benchmarks.engine_overhead import measure

    r = measure("sema", steps=2, reps=1, overrides=["trainer.num_threads=1"], profile="smoke")
    assert r["engine_ms_per_step"] > 0 and r["hand_ms_per_step"] > 0


def test_the_step_breakdown_splits_a_step_and_counts_its_flops():
    from torch.utils.flop_counter import FlopCounterMode

    from benchmarks.engine_overhead import breakdown

    b = breakdown("sema", steps=3, overrides=["trainer.num_threads=1"], profile="smoke")
    fractions = [b[f"{k}_fraction"] for k in ("data", "forward_backward", "optimizer", "averager")]
    assert all(f > 0 for f in fractions) and sum(fractions) == pytest.approx(1.0)
    # the FLOPs of one step of the smoke classifier, counted independently on a fresh copy of the model
    cfg, run_dir = smoke(Path("/tmp/unused"), "sema")
    trainer = engine.Trainer(cfg, run_dir)
    x, y = next(iter(trainer.loader))
    with FlopCounterMode(display=False) as counter:
        trainer.task.train_loss(trainer.model, (x, y)).backward()
    assert b["flops_per_step"] == counter.get_total_flops() > 0


def test_a_run_interrupted_before_its_first_checkpoint_starts_over(tmp_path):
    cfg, run_dir = smoke(tmp_path, "baseline")
    run_dir.mkdir(parents=True)
    (run_dir / "result.json").write_text(json.dumps({"status": "running", "config": {"seed": 99}}))
    assert engine.run(cfg, run_dir)["status"] == "completed"


# ------------------------------------------------------------------------------ global batch and learning rate
def test_peak_lr_follows_the_global_batch_by_the_declared_rule(tmp_path):
    from benchmarks.optim import peak_lr

    cfg, _ = compose_run("paper/detection", "sema", 0, str(tmp_path))
    assert (cfg.optim.lr, cfg.optim.reference_batch, cfg.task.batch_size) == (0.02, 16, 2)
    assert peak_lr(cfg.optim, 2, world_size=8) == (0.02, 16)  # the source's 8 GPUs: the recipe's lr
    assert peak_lr(cfg.optim, 2, world_size=4) == (0.01, 8)  # half the global batch, half the lr
    assert peak_lr(cfg.optim, 2, world_size=1) == (0.0025, 2)
    cfg.optim.lr_scaling = "none"
    with pytest.raises(ValueError, match=r"lr 0.02 is for a global batch of 16 .* 4 process\(es\) x "
                                         r"task.batch_size=2 = 8; run on 8 processes"):
        peak_lr(cfg.optim, 2, world_size=4)
    one_gpu, _ = compose_run("paper/classification", "sema", 0, str(tmp_path))
    assert peak_lr(one_gpu.optim, 100, world_size=1) == (0.1, 100)  # no reference batch: one process of its own


def test_a_smoke_run_records_its_global_batch_and_peak_lr(tmp_path):
    cfg, run_dir = smoke(tmp_path, "ema")
    result = engine.run(cfg, run_dir)
    assert (result["runtime"]["global_batch"], result["runtime"]["peak_lr"]) == (32, 0.05)


def test_loader_workers_persistent_or_not_train_on_the_same_examples_in_the_same_order(tmp_path):
    # Without augmentation no random draw depends on where a batch is made: in the process, in a worker
    # re-created every epoch, or in one kept across epochs (persistent workers draw no new base seed).
    runs = {}
    for name, extra in (("main", ["task.num_workers=0"]), ("workers", ["task.num_workers=1"]),
                        ("persistent", ["task.num_workers=1", "trainer.deterministic=false"])):
        cfg, run_dir = compose_run("smoke/classification", "sema", 0, str(tmp_path / name),
                                   FAST + ["trainer.epochs=3"] + extra)
        history = engine.run(cfg, run_dir)["history"]
        runs[name] = [(h["train_loss"], h["online"], h["avg"]) for h in history]
    assert runs["main"] == runs["workers"] == runs["persistent"]


def test_gradient_accumulation_equals_the_large_batch_and_updates_the_average_once_per_step(tmp_path):
    # 2 micro-batches of 4 windows = one batch of 8: the same windows (one shuffle), the same mean gradient; the
    # average is updated at each of the 8 optimizer steps, never per micro-batch.
    runs = {}
    for name, extra in (("accumulated", ["task.batch_size=4", "trainer.grad_accum_steps=2"]),
                        ("large", ["task.batch_size=8"])):
        cfg, run_dir = compose_run("smoke/lm", "sema", 0, str(tmp_path / name),
                                   FAST + ["optim.reference_batch=8", *extra])
        result = engine.run(cfg, run_dir)
        assert result["runtime"]["global_batch"] == 8 and result["runtime"]["peak_lr"] == cfg.optim.lr
        state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
        assert state["global_step"] == state["averager"]["updates"] == 8
        runs[name] = result["history"]
    for a, b in zip(runs["accumulated"], runs["large"], strict=True):
        assert (a["epoch"], a["step"], a["lr"]) == (b["epoch"], b["step"], b["lr"])
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["avg"]["ppl"] == pytest.approx(b["avg"]["ppl"], rel=1e-5)


def test_no_weight_decay_on_1d_parameters_and_the_median_of_the_last_k(tmp_path):
    cfg, run_dir = compose_run("smoke/classification", "sema", 0, str(tmp_path / "groups"),
                               FAST + ["optim.decay_1d=false", "optim.weight_decay=0.05"])
    groups = engine.Trainer(cfg, run_dir).optimizer.param_groups
    assert {(g["weight_decay"], all(p.ndim >= 2 for p in g["params"])) for g in groups} == {(0.05, True), (0.0, False)}
    assert sum(len(g["params"]) for g in groups) == len(list(engine.Trainer(cfg, run_dir).model.parameters()))
    cfg, run_dir = compose_run("smoke/classification", "baseline", 0, str(tmp_path / "median"),
                               FAST + ["trainer.epochs=3", "trainer.median_of_last=2"])
    result = engine.run(cfg, run_dir)
    last_two = [h["online"]["top1"] for h in result["history"][-2:]]
    assert result["median_last_k"] == 2 and result["median_last"]["top1"] == sum(last_two) / 2
