"""Run facts derived in one place (benchmarks/runtime.py, RunContext): steps per epoch as the engine's loader
counts them, by hand and against a real DataLoader with a DistributedSampler."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from benchmarks.runtime import cache_dir, steps_per_epoch, to_device
from benchmarks.tasks.protocol import RunContext


@pytest.mark.parametrize("n, batch, world, drop_last, cap, expected", [
    (100, 32, 1, True, None, 3),  # floor(100 / 32)
    (100, 32, 1, False, None, 4),  # ceil(100 / 32)
    (100, 32, 3, True, None, 1),  # floor(100 / 3) = 33 per rank -> floor(33 / 32)
    (100, 32, 3, False, None, 2),  # ceil(100 / 3) = 34 per rank -> ceil(34 / 32)
    (100, 8, 1, True, 5, 5),  # capped
])
def test_steps_per_epoch_by_hand(n, batch, world, drop_last, cap, expected):
    assert steps_per_epoch(n, batch, world, drop_last, cap) == expected


@pytest.mark.parametrize("world, drop_last", [(1, True), (1, False), (3, True), (3, False)])
def test_steps_per_epoch_equals_the_length_of_the_engines_loader(world, drop_last):
    data = TensorDataset(torch.arange(100))
    sampler = DistributedSampler(data, num_replicas=world, rank=0, drop_last=drop_last) if world > 1 else None
    loader = DataLoader(data, batch_size=32, sampler=sampler, drop_last=drop_last)
    assert steps_per_epoch(100, 32, world, drop_last) == len(loader)


def test_run_context_counts_the_run():
    ctx = RunContext(device=torch.device("cpu"), seed=0, out_dir=Path("."), cache_dir=Path("."), epochs=3,
                     batch_size=16, max_steps_per_epoch=4)
    assert (ctx.steps_per_epoch(64), ctx.total_steps(64)) == (4, 12)
    assert ctx.steps_per_epoch(48) == 3


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SEMA_BENCH_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path
    monkeypatch.delenv("SEMA_BENCH_CACHE")
    assert cache_dir() == Path.home() / ".cache" / "sema-bench"


def test_to_device_moves_nested_batches_and_keeps_their_types():
    from collections import namedtuple

    Pair = namedtuple("Pair", "x y")
    batch = {"a": [torch.ones(1), (torch.zeros(2), "label")], "b": Pair(torch.ones(1), 3)}
    moved = to_device(batch, torch.device("meta"))
    assert moved["a"][0].device.type == "meta" and moved["a"][1][1] == "label"
    assert isinstance(moved["b"], Pair) and moved["b"].x.device.type == "meta" and moved["b"].y == 3


# ------------------------------------------------------------------------------------------ device choice
from benchmarks.runtime import CudaUnavailable, choose_device, describe_runtime, gpu_requested  # noqa: E402


@pytest.fixture
def no_gpu_env(monkeypatch):
    for var in ("SLURM_GPUS_ON_NODE", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "SLURM_GPUS", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_auto_uses_the_cpu_only_when_no_gpu_is_expected(no_gpu_env):
    assert choose_device("auto", 0, "quick") == torch.device("cpu")
    assert choose_device("cpu", 0, "paper") == torch.device("cpu")  # on purpose: allowed


@pytest.mark.parametrize("choice, profile, env, reason", [
    ("cuda", "quick", {}, "trainer.device=cuda"),
    ("auto", "paper", {}, "a paper recipe"),
    ("auto", "quick", {"SLURM_GPUS_ON_NODE": "4"}, "SLURM_GPUS_ON_NODE=4"),
    ("auto", "smoke", {"CUDA_VISIBLE_DEVICES": "0,1"}, "CUDA_VISIBLE_DEVICES=0,1"),
])
def test_no_silent_fallback_when_a_gpu_is_expected(no_gpu_env, monkeypatch, choice, profile, env, reason):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(CudaUnavailable) as err:
        choose_device(choice, 0, profile)
    message = str(err.value)
    assert reason in message and "torch.cuda.is_available()=False" in message and "trainer.device=cpu" in message
    assert f"torch {torch.__version__}" in message


def test_a_job_without_gpus_expects_none(no_gpu_env, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("SLURM_JOB_GPUS", "")
    assert gpu_requested("quick") is None


def test_the_runtime_record_of_a_cpu_run():
    assert describe_runtime(torch.device("cpu"), 1, "float32") == {
        "device": "cpu", "gpu": None, "cuda": None, "cudnn": None, "world_size": 1, "precision": "float32"}


def test_a_paper_recipe_on_a_cpu_machine_fails_at_once_with_the_reason(no_gpu_env, tmp_path):
    from benchmarks import engine
    from benchmarks.recipes import compose_run

    cfg, run_dir = compose_run("paper/classification", "sema", 0, str(tmp_path))
    with pytest.raises(CudaUnavailable, match="a paper recipe"):
        engine.run(cfg, run_dir)
    assert engine.read_result(run_dir)["status"] == "failed"  # recorded, not left "running"


def test_device_zero_in_a_list_is_a_gpu_but_a_count_of_zero_is_none(no_gpu_env, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert "CUDA_VISIBLE_DEVICES=0" in gpu_requested("quick")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setenv("SLURM_GPUS_ON_NODE", "0")
    assert gpu_requested("quick") is None
