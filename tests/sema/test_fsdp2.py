"""`sema` on FSDP2 models (`fully_shard`, DTensor parameters), 2 gloo processes on the CPU.

Every method in `sema.METHODS`, bound to a sharded model and trained on each rank's half of every batch, ends
with the same average (gathered) and the same model as the method on the unsharded model trained on whole
batches in one process (to float tolerance), switches included; inside `swapped()` the sharded model computes
with the average. Each rank keeps only its shard of the average (measured: about 1/world of a float32 copy). A
model that mixes sharded and plain parameters, or that was sharded after binding, is refused with a clear error.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import sema
from sema.protocol import WrapsOptimizer
from sema.sharding import full_state_dict, is_sharded, local
from sema.testing import template_kwargs

WORLD, EPOCHS, STEPS, BATCH = 2, 3, 3, 8


class Net(nn.Module):
    """Two linear layers (even row counts: shards of equal size) and a floating buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 8)
        self.fc2 = nn.Linear(8, 4)
        self.register_buffer("scale", torch.full((4,), 0.5))

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x))) * self.scale


def _net() -> Net:
    torch.manual_seed(0)
    return Net()


def _data() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(BATCH, 6, generator=g), torch.randn(BATCH, 4, generator=g)) for _ in range(EPOCHS * STEPS)]


def _train(model: nn.Module, name: str, rank: int, world: int):
    """EPOCHS x STEPS SGD steps on rank `rank`'s rows of each batch; returns the method."""
    method = sema.METHODS[name](model, **template_kwargs(sema.METHODS[name], STEPS))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    if isinstance(method, WrapsOptimizer):
        optimizer = method.wrap_optimizer(optimizer)
    rows = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
    data = _data()
    for epoch in range(EPOCHS):
        for step in range(STEPS):
            x, y = data[epoch * STEPS + step]
            loss = nn.functional.mse_loss(model(x[rows]), y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            method.update()
        method.epoch_end()
    return method


def _sharded(model: nn.Module) -> nn.Module:
    from torch.distributed.fsdp import fully_shard

    fully_shard(model.fc1)
    fully_shard(model.fc2)
    fully_shard(model)
    return model


def _full(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in full_state_dict(module).items()}


def _rank(rank: int, world: int, init_file: str, out) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        results = {}
        for name in sema.METHODS:
            model = _sharded(_net())
            method = _train(model, name, rank, world)
            x = _data()[0][0]
            with torch.no_grad(), method.swapped():
                inside = model(x)
            results[name] = {"average": _full(method.average), "model": _full(model), "inside": inside}
        from torch.distributed.fsdp import fully_shard

        # memory: this rank's share of the average against one full float32 copy
        model = _sharded(_net())
        ema = sema.EMA(model)
        mine = sum(local(t).untyped_storage().nbytes() for t in ema.average.state_dict().values())
        full = sum(t.numel() * 4 for t in _net().state_dict().values())
        results["memory"] = (mine, full, all(is_sharded(p) for p in ema.average.parameters()))
        # BatchNorm (an integer buffer first in its group), default buffers, and an update right after a forward
        # without backward (FSDP2 then keeps the root's gathered parameters registered); binding after one too
        torch.manual_seed(0)
        bn = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Linear(8, 4))
        fully_shard(bn[0])
        fully_shard(bn[2])
        fully_shard(bn)
        with torch.no_grad():
            bn(torch.randn(4, 6))
        bn_ema = sema.SEMA(bn, decay=0.5)
        bn.train()
        bn(torch.randn(4, 6)).sum().backward()
        with torch.no_grad():
            bn.eval()
            bn(torch.randn(4, 6))
        bn_ema.update()
        bn_ema.epoch_end()
        results["bn"] = sorted(_full(bn_ema.average))
        # errors
        half = _net()
        fully_shard(half.fc1)  # the root (fc2, scale) left unsharded
        try:
            sema.EMA(half)
        except ValueError as err:
            results["mixed"] = str(err)
        late = _net()
        ema = sema.EMA(late)
        _sharded(late)
        try:
            ema.update()
        except ValueError as err:
            results["late"] = str(err)
        out[rank] = results
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def sharded_runs(tmp_path_factory):
    init = tmp_path_factory.mktemp("fsdp2") / "init"
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_rank, args=(WORLD, str(init), out), nprocs=WORLD, join=True)
        return dict(out)


def _close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


@pytest.mark.ddp
@pytest.mark.parametrize("name", sorted(sema.METHODS))
def test_a_sharded_run_ends_with_the_unsharded_runs_average_and_model(sharded_runs, name):
    torch.set_num_threads(1)
    model = _net()
    method = _train(model, name, 0, 1)
    expected_average = {k: v.clone() for k, v in method.average.state_dict().items()}
    with torch.no_grad(), method.swapped():
        expected_inside = model(_data()[0][0])
    for rank in range(WORLD):  # every rank gathers the same full tensors
        got = sharded_runs[rank][name]
        _close(got["average"], expected_average)
        _close(got["model"], model.state_dict())
        torch.testing.assert_close(got["inside"], expected_inside, rtol=1e-5, atol=1e-6)


@pytest.mark.ddp
def test_each_rank_keeps_only_its_shard_of_the_average(sharded_runs):
    for rank in range(WORLD):
        mine, full, sharded = sharded_runs[rank]["memory"]
        assert sharded
        # parameters halve exactly (even rows); the 4-element buffer is replicated
        assert mine == (full - 16) // WORLD + 16


@pytest.mark.ddp
def test_batchnorm_buffers_and_updates_after_a_forward_without_backward_work_sharded(sharded_runs):
    for rank in range(WORLD):
        assert sharded_runs[rank]["bn"] == ["0.bias", "0.weight", "1.bias", "1.num_batches_tracked",
                                            "1.running_mean", "1.running_var", "1.weight", "2.bias", "2.weight"]


@pytest.mark.ddp
def test_a_mixed_or_late_sharded_model_is_refused_with_the_fix(sharded_runs):
    for rank in range(WORLD):
        assert "mixes sharded (DTensor) and plain parameters: plain ['fc2.weight', 'fc2.bias']" in \
            sharded_runs[rank]["mixed"]
        assert "apply fully_shard to the root module too" in sharded_runs[rank]["mixed"]
        assert "sharding changed since the average was bound" in sharded_runs[rank]["late"]
