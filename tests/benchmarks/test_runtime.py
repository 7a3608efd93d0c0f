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
