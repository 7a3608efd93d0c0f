"""Distributed evaluation (benchmarks/evaluation.py): ranks evaluate disjoint shards that cover the set once, and
the reduced metrics equal one process's, with 2 and 3 gloo processes on the classification task."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from benchmarks.evaluation import evaluate_sharded, shard


@pytest.mark.parametrize("n, world", [(200, 2), (200, 3), (7, 3), (2, 3)])
def test_shards_cover_every_example_exactly_once(n, world):
    seen = [i for rank in range(world) for i in shard(n, rank, world)]
    assert seen == list(range(n))


def _setup(tmp_path):
    from omegaconf import OmegaConf

    from benchmarks.recipes import compose_run
    from benchmarks.runtime import cache_dir
    from benchmarks.tasks import load_task
    from benchmarks.tasks.protocol import RunContext

    cfg, _ = compose_run("smoke/classification", "baseline", 0, str(tmp_path), ["task.eval_batch_size=16"])
    torch.manual_seed(0)
    ctx = RunContext(device=torch.device("cpu"), seed=0, out_dir=tmp_path, cache_dir=cache_dir())
    setup = load_task("classification").setup(OmegaConf.to_object(cfg.task), ctx)
    return setup.model.eval(), setup.sharded_evaluation


def _rank(rank: int, world: int, init_file: str, tmp_path, out):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model, spec = _setup(tmp_path)
        out[rank] = evaluate_sharded(spec, model, torch.device("cpu"), rank, world)
    finally:
        dist.destroy_process_group()


@pytest.mark.ddp
@pytest.mark.parametrize("world", [2, 3])
def test_distributed_evaluation_equals_one_process(tmp_path, world):
    model, spec = _setup(tmp_path)
    single = evaluate_sharded(spec, model, torch.device("cpu"))
    assert len(spec.dataset) == 200 and single["top1"] > 0
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_rank, args=(world, str(tmp_path / "init"), tmp_path, out), nprocs=world, join=True)
        results = dict(out)
    for rank in range(world):  # every rank ends with the same, complete metrics
        assert results[rank]["top1"] == single["top1"] and results[rank]["top5"] == single["top5"]  # counts: exact
        assert results[rank]["loss"] == pytest.approx(single["loss"], rel=1e-6)
