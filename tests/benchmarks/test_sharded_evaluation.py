"""Distributed evaluation (benchmarks/evaluation.py): ranks evaluate disjoint shards that cover the set once, and
the reduced metrics equal one process's, with 2 and 3 gloo processes, for every task that shards its evaluation
(counts exact, float sums to rounding). The end-of-run metrics that tasks split across ranks (generation's FID
samples, the language model's test perplexity) equal one process's too."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from benchmarks.evaluation import evaluate_sharded, shard


@pytest.mark.parametrize("n, world", [(200, 2), (200, 3), (7, 3), (2, 3)])
def test_shards_cover_every_example_exactly_once(n, world):
    seen = [i for rank in range(world) for i in shard(n, rank, world)]
    assert seen == list(range(n))


def test_every_task_shards_its_evaluation(tmp_path):
    from benchmarks.tasks import TASKS

    for task in TASKS:
        _setup(tmp_path, task)  # asserts sharded_evaluation is set


def _setup(tmp_path, task="classification", rank=0, world=1, extra=()):
    from omegaconf import OmegaConf

    from benchmarks.recipes import compose_run
    from benchmarks.runtime import cache_dir
    from benchmarks.tasks import load_task
    from benchmarks.tasks.protocol import RunContext

    cfg, _ = compose_run(f"smoke/{task}", "baseline", 0, str(tmp_path), ["task.eval_batch_size=3", *extra])
    torch.manual_seed(0)
    ctx = RunContext(device=torch.device("cpu"), seed=0, out_dir=tmp_path / f"rank{rank}", cache_dir=cache_dir(),
                     rank=rank, world_size=world)
    setup = load_task(task).setup(OmegaConf.to_object(cfg.task), ctx)
    assert setup.sharded_evaluation is not None, task
    return setup.model.eval(), setup.sharded_evaluation, setup


def _rank(rank: int, world: int, init_file: str, tmp_path, task, out, final=False, extra=()):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model, spec, setup = _setup(tmp_path, task, rank, world, extra)
        with torch.no_grad():
            out[rank] = setup.final_evaluate(model) if final else evaluate_sharded(spec, model, torch.device("cpu"),
                                                                                  rank, world)
    finally:
        dist.destroy_process_group()


EXACT = {"classification": ("top1", "top5"), "segmentation": ("miou", "pixel_acc", "macc"), "regression": (),
         "video": (), "lm": (), "detection": (), "generation": (),
         "ssl": ("knn_top1", "linear_top1")}  # metrics made of counts: equal bit for bit


@pytest.mark.ddp
@pytest.mark.parametrize("task, world", [("classification", 2), ("classification", 3), ("segmentation", 2),
                                         ("regression", 3), ("video", 2), ("lm", 2), ("detection", 2),
                                         ("generation", 2), ("ssl", 3)])
def test_distributed_evaluation_equals_one_process(tmp_path, task, world):
    model, spec, _ = _setup(tmp_path, task)
    single = evaluate_sharded(spec, model, torch.device("cpu"))
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_rank, args=(world, str(tmp_path / "init"), tmp_path, task, out), nprocs=world, join=True)
        results = dict(out)
    for rank in range(world):  # every rank ends with the same, complete metrics
        assert results[rank].keys() == single.keys()
        for key, value in single.items():
            if key in EXACT[task]:
                assert results[rank][key] == value, (task, key)
            else:
                assert results[rank][key] == pytest.approx(value, rel=1e-5, abs=1e-9), (task, key)


# generation: 7 FID samples in chunks of 3 (the last one short), split over 2 ranks
FINAL = {"generation": ["task.fid_samples=7", "task.sample_steps=4"], "lm": []}


@pytest.mark.ddp
@pytest.mark.parametrize("task", sorted(FINAL))
def test_end_of_run_metrics_split_across_ranks_equal_one_process(tmp_path, task):
    model, _, setup = _setup(tmp_path, task, extra=FINAL[task])
    assert setup.final_evaluate_on_every_rank
    with torch.no_grad():
        single = setup.final_evaluate(model)
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_rank, args=(2, str(tmp_path / "init"), tmp_path, task, out, True, FINAL[task]), nprocs=2, join=True)
        results = dict(out)
    assert single and all(results[rank].keys() == single.keys() for rank in (0, 1))
    for key, value in single.items():
        assert results[0][key] == pytest.approx(value, rel=1e-5) == results[1][key], key
    if task == "generation":
        assert (tmp_path / "rank0" / "samples.png").is_file() and not (tmp_path / "rank1" / "samples.png").exists()


def _tiny_rank(rank: int, world: int, init_file: str, out):
    from torch.utils.data import TensorDataset

    from benchmarks.evaluation import ShardedEvaluation

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        spec = ShardedEvaluation(TensorDataset(torch.tensor([1.0, 2.0])), 1,
                                 lambda model, b: {"sum": b[0].sum(), "n": torch.tensor(len(b[0]))},
                                 lambda t: {"mean": t["sum"] / t["n"]})
        out[rank] = evaluate_sharded(spec, None, torch.device("cpu"), rank, world)
    finally:
        dist.destroy_process_group()


@pytest.mark.ddp
def test_a_rank_with_an_empty_shard_adds_zeros_instead_of_hanging(tmp_path):
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_tiny_rank, args=(3, str(tmp_path / "init"), out), nprocs=3, join=True)  # 2 examples, 3 ranks
        assert dict(out) == {0: {"mean": 1.5}, 1: {"mean": 1.5}, 2: {"mean": 1.5}}


def _fsdp_rank(rank: int, world: int, init_file: str, out):
    import datetime

    from torch.distributed.fsdp import fully_shard
    from torch.utils.data import TensorDataset

    from benchmarks.evaluation import ShardedEvaluation

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))  # a rank stuck in a collective fails, not hangs
    try:
        torch.manual_seed(0)
        model = fully_shard(torch.nn.Linear(3, 2))
        x = torch.arange(15.0).view(5, 3)
        def sums(m, batch):
            y = m(batch[0])
            return {"sum": y.sum(), "n": torch.tensor(y.numel())}

        spec = ShardedEvaluation(TensorDataset(x), 2, sums, lambda t: {"mean": t["sum"] / t["n"]})
        with torch.no_grad():
            out[rank] = evaluate_sharded(spec, model, torch.device("cpu"), rank, world)
            out[f"single{rank}"] = float(model(x).mean())  # every rank: a forward is a collective
    finally:
        dist.destroy_process_group()


@pytest.mark.ddp
def test_an_fsdp2_model_evaluates_in_lockstep_when_the_shards_have_unequal_batch_counts(tmp_path):
    # 5 examples, batches of 2, 2 ranks: rank 0 has 2 examples (1 batch), rank 1 has 3 (2 batches). Every FSDP2
    # forward gathers the parameters from both ranks, so rank 0 must run a second (discarded) batch.
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_fsdp_rank, args=(2, str(tmp_path / "init"), out), nprocs=2, join=True)
        results = dict(out)
    assert results[0]["mean"] == pytest.approx(results["single0"], rel=1e-6) == results[1]["mean"]
