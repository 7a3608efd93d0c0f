"""SSL task: probe metrics and losses against hand-computed values, the teacher schedule, both teacher variants
end to end through the engine, and input errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from benchmarks import engine
from benchmarks.data.paths import MissingDataset
from benchmarks.models import ssl_heads
from benchmarks.recipes import compose_run
from benchmarks.tasks import ssl
from benchmarks.tasks.protocol import RunContext

FAST = ["logger.wandb.mode=disabled", "trainer.num_threads=1"]


def ctx(tmp_path: Path) -> RunContext:
    return RunContext(device=torch.device("cpu"), seed=0, out_dir=tmp_path, cache_dir=tmp_path, epochs=1,
                      batch_size=16)


def tiny_cfg(**overrides) -> ssl.Config:
    base = dict(model="tiny_cnn", hidden_dim=32, out_dim=16, batch_size=16, max_train_samples=64,
                probe_train_samples=64, max_eval_samples=32, knn_k=5, probe_max_iter=5)
    return ssl.Config(**{**base, **overrides})


# ------------------------------------------------------------------------------------------ metrics
def test_knn_votes_by_similarity_and_temperature():
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    query = torch.tensor([[1.0, 0.1]])
    # cos similarities: 0.995 (label 0), 0.0995 (label 1), 0.774 (label 1)
    assert ssl.knn_predict(bank, labels, query, 2, k=1).tolist() == [0]
    # k=3, sharp weights: exp(0.995/0.1) > exp(0.0995/0.1) + exp(0.774/0.1) -> label 0
    assert ssl.knn_predict(bank, labels, query, 2, k=3, temperature=0.1).tolist() == [0]
    # k=3, flat weights (T=100): two votes for label 1 beat one for label 0
    assert ssl.knn_predict(bank, labels, query, 2, k=3, temperature=100.0).tolist() == [1]


def test_linear_probe_separates_separable_classes_deterministically():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 4.0]])
    labels = torch.arange(3).repeat(20)
    x = centres[labels] + 0.3 * torch.randn(60, 3, generator=g)
    predicted = ssl.linear_probe(x, labels, x, 3, max_iter=20)
    assert torch.equal(predicted, labels)
    assert torch.equal(predicted, ssl.linear_probe(x, labels, x, 3, max_iter=20))


def test_losses_match_hand_computed_values():
    e = torch.eye(2)
    assert ssl_heads.byol_loss(e, e).item() == pytest.approx(0.0, abs=1e-6)
    assert ssl_heads.byol_loss(e, e.flip(0)).item() == pytest.approx(2.0)  # orthogonal: 2 - 2 * 0
    assert ssl_heads.simsiam_loss(e, 3 * e).item() == pytest.approx(-1.0)
    # logits [[1, 0], [0, 1]] at T=1: CE = log(1 + e^-1), times 2T
    assert ssl_heads.moco_v3_loss(e, e, 1.0).item() == pytest.approx(2 * math.log(1 + math.exp(-1)))
    # MoCo v2, T=0.5: query e0, key e0 (logit 1/0.5), queue [e1, -e0] (logits 0, -2): CE = -log(e^2 / (e^2+1+e^-2))
    queue = torch.stack([e[1], -e[0]])
    expected = -math.log(math.exp(2) / (math.exp(2) + 1 + math.exp(-2)))
    assert ssl_heads.moco_v2_loss(3 * e[:1], 2 * e[:1], queue, 0.5).item() == pytest.approx(expected)


def test_moco_v2_queue_is_a_ring_of_the_latest_keys_and_its_loss_uses_view_one_against_view_two():
    torch.manual_seed(0)
    model = ssl_heads.SSLModel(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 6)), 6, "mocov2",
                               hidden_dim=8, out_dim=4, queue_size=5)
    assert model.temperature == 0.2 and isinstance(model.online.predictor, torch.nn.Identity)
    assert [type(m).__name__ for m in model.online.projector] == ["Linear", "ReLU", "Linear"]  # no BN
    keys = [torch.nn.functional.normalize(torch.randn(3, 4), dim=1) for _ in range(2)]
    model.enqueue(keys[0])
    model.enqueue(keys[1])  # 6 keys into 5 slots: the first key is overwritten by the last
    assert torch.equal(model.queue, torch.cat([keys[1][2:], keys[0][1:], keys[1][:2]])) and model.queue_ptr == 1
    v1, v2 = torch.randn(2, 3, 2, 2), torch.randn(2, 3, 2, 2)
    queue = model.queue.clone()
    expected = ssl_heads.moco_v2_loss(model.online(v1)[1], model.teacher(v2), queue, 0.2)
    assert model(v1, v2).item() == pytest.approx(expected.item())
    assert torch.allclose(model.queue[1:3], torch.nn.functional.normalize(model.teacher(v2), dim=1))  # enqueued


def test_cosine_momentum_rises_from_base_to_one():
    assert ssl_heads.cosine_momentum(0.99, 0, 100) == pytest.approx(0.99)
    assert ssl_heads.cosine_momentum(0.99, 50, 100) == pytest.approx(0.995)
    assert ssl_heads.cosine_momentum(0.99, 100, 100) == pytest.approx(1.0)
    assert ssl_heads.cosine_momentum(0.99, 500, 100) == pytest.approx(1.0)


def test_momentum_update_and_copy_move_only_the_teacher():
    model = ssl_heads.SSLModel(torch.nn.Sequential(torch.nn.Linear(4, 6)), 6, "byol", hidden_dim=8, out_dim=4)
    with torch.no_grad():
        model.online.backbone[0].weight.fill_(1.0)
        model.teacher.backbone[0].weight.fill_(3.0)
    ssl_heads.momentum_update(model, 0.75)
    assert torch.allclose(model.teacher.backbone[0].weight, torch.full((6, 4), 0.75 * 3.0 + 0.25 * 1.0))
    assert torch.equal(model.online.backbone[0].weight, torch.ones(6, 4))
    ssl_heads.copy_online_to_teacher(model)
    assert torch.equal(model.teacher.backbone[0].weight, model.online.backbone[0].weight)


def test_the_official_switch_copies_online_into_the_teacher_every_n_steps_instead_of_the_momentum_update(tmp_path):
    torch.manual_seed(0)
    setup = ssl.setup(tiny_cfg(algorithm="byol", teacher_switch_every=2), ctx(tmp_path))
    model = setup.model

    def step(k):
        with torch.no_grad():
            for p in model.online.parameters():
                p.add_(0.5)  # an "optimizer step" on the online network
        setup.after_step(k)

    def teacher_is_online():
        return all(torch.equal(t, o) for t, o in zip(model.teacher.parameters(), model.online.parameters()))

    step(1)
    assert not teacher_is_online()  # step 1: a momentum update, the teacher only moved part of the way
    step(2)
    assert teacher_is_online()  # step 2: the switch, teacher <- online exactly
    step(3)
    assert not teacher_is_online()
    with pytest.raises(ValueError, match="SimSiam has none"):
        ssl.setup(tiny_cfg(algorithm="simsiam", teacher_switch_every=2), ctx(tmp_path))


@pytest.mark.parametrize("algorithm", ["byol", "mocov2", "mocov3", "simsiam"])
def test_one_step_trains_the_online_network_only(tmp_path, algorithm):
    torch.manual_seed(0)
    setup = ssl.setup(tiny_cfg(algorithm=algorithm), ctx(tmp_path))
    batch = next(iter(torch.utils.data.DataLoader(setup.train_set, batch_size=16)))
    assert batch.dtype == torch.uint8 and batch.shape == (16, 3, 32, 32)  # images only: no labels
    loss = setup.train_loss(setup.model, batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in setup.model.online.parameters())
    if setup.model.teacher is not None:
        assert all(p.grad is None and not p.requires_grad for p in setup.model.teacher.parameters())
        assert setup.after_step is not None
    else:
        assert setup.after_step is None
    assert setup.averaged_module is setup.model.online and setup.headline == "linear_top1"
    optimised = {id(p) for g in setup.param_groups(setup.model) for p in g["params"]}
    assert optimised == {id(p) for p in setup.model.online.parameters()}
    setup.model.eval()
    with torch.no_grad():
        metrics = setup.evaluate(setup.model)
    assert set(metrics) == {"knn_top1", "linear_top1"} and all(0 <= v <= 100 for v in metrics.values())


def test_bad_choices_and_missing_roots_are_explained(tmp_path):
    with pytest.raises(ValueError, match="byol, mocov2, mocov3, simsiam"):
        ssl.setup(tiny_cfg(algorithm="dino"), ctx(tmp_path))
    with pytest.raises(ValueError, match="SimSiam has none"):
        ssl.setup(tiny_cfg(algorithm="simsiam", teacher_switch=True), ctx(tmp_path))
    with pytest.raises(ValueError, match=r"task.blur_p=\[1.0\] must be two probabilities in \[0, 1\], one per view"):
        ssl.setup(tiny_cfg(blur_p=[1.0]), ctx(tmp_path))
    with pytest.raises(ValueError, match="task.hue=0.7 must be in"):
        ssl.setup(tiny_cfg(hue=0.7), ctx(tmp_path))
    with pytest.raises(ValueError, match="task.queue_size=0 must be a positive"):
        ssl.setup(tiny_cfg(algorithm="mocov2", queue_size=0), ctx(tmp_path))
    with pytest.raises(ValueError, match="fashion_mnist, cifar10"):
        ssl.setup(tiny_cfg(dataset="mnist"), ctx(tmp_path))
    with pytest.raises(MissingDataset, match="cifar-100-python"):
        ssl.setup(tiny_cfg(dataset="cifar100", data_root=str(tmp_path)), ctx(tmp_path))
    with pytest.raises(MissingDataset, match="stl10_binary"):
        ssl.setup(tiny_cfg(dataset="stl10", data_root=str(tmp_path)), ctx(tmp_path))


# ------------------------------------------------------------------------------------ end to end
def _teacher_matches_online(weights: dict) -> bool:
    pairs = [(k, "online." + k[len("teacher."):]) for k in weights if k.startswith("teacher.")]
    assert pairs
    return all(torch.equal(weights[t], weights[o]) for t, o in pairs)


@pytest.mark.slow
@pytest.mark.parametrize("teacher_switch", [False, True])
def test_sema_smoke_run_through_the_engine(tmp_path, teacher_switch):
    cfg, run_dir = compose_run("smoke/ssl", "sema", 0, str(tmp_path),
                               [*FAST, f"task.teacher_switch={str(teacher_switch).lower()}"])
    result = engine.run(cfg, run_dir)
    assert result["status"] == "completed" and result["headline"] == "linear_top1"
    assert result["higher_is_better"] is True and [h["switched"] for h in result["history"]] == [False, True]
    assert set(result["final"]) == {"knn_top1", "linear_top1"}
    online = load_file(run_dir / "weights" / "online.safetensors")
    average = load_file(run_dir / "weights" / "average.safetensors")
    # The WA method averages the online network (backbone, projector, predictor), not the teacher.
    assert {k.split(".")[0] for k in average} == {"backbone", "projector", "predictor"}
    # The final switch wrote the average into the online network; the official variant also copies it into the
    # teacher, so after the last epoch the teacher equals the online network exactly; the default keeps its own.
    assert _teacher_matches_online(online) is teacher_switch


def _moco_rank(rank: int, world: int, init_file: str, out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)  # the same model on both ranks, as DDP makes it
        model = ssl_heads.SSLModel(torch.nn.Linear(3, 6), 6, "mocov2", hidden_dim=8, out_dim=2, queue_size=6)
        model.enqueue(torch.full((2, 2), float(rank + 1)))  # each rank's keys: rows of 1s (rank 0), 2s (rank 1)
        out[rank] = model.queue.tolist()
    finally:
        dist.destroy_process_group()


@pytest.mark.ddp
def test_moco_v2_ranks_enqueue_every_ranks_keys_in_rank_order(tmp_path):
    import torch.multiprocessing as mp

    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_moco_rank, args=(2, str(tmp_path / "init"), out), nprocs=2, join=True)
        assert out[0] == out[1]
        assert out[0][:4] == [[1.0, 1.0]] * 2 + [[2.0, 2.0]] * 2
