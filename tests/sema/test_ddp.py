"""DDP with the gloo backend and 2 processes: the average is identical on both ranks."""

import gc
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import sema


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)  # same initial weights on both ranks
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    avg = sema.SEMA(ddp, decay=0.9, switch_every=1)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(100 + rank)  # different data per rank
    for epoch in range(2):
        for _ in range(3):
            opt.zero_grad()
            ddp(torch.randn(5, 4, generator=g)).pow(2).mean().backward()
            opt.step()
            avg.update()
        avg.epoch_end()
    torch.save({k: v.clone() for k, v in avg.state_dict()["average"].items()}, f"{out_dir}/rank{rank}.pt")
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, f"{out_dir}/model{rank}.pt")
    del ddp, avg, opt
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.ddp
@pytest.mark.slow
def test_ddp_two_ranks_identical_average(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert set(a) == {"0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
                      "1.num_batches_tracked", "2.weight", "2.bias"}  # no "module." prefix
    for k in ("0.weight", "0.bias", "1.weight", "2.weight", "2.bias"):
        assert torch.equal(a[k], b[k]), k  # parameters: gradients are all-reduced, so bit for bit equal
    # BN running statistics are per-rank in DDP (each rank sees its own batches), as for the model itself
    ma = torch.load(tmp_path / "model0.pt", weights_only=True)
    assert torch.equal(ma["0.weight"], a["0.weight"])  # the switch wrote the average into the model
