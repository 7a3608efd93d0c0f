"""The averaging update on an FSDP2 model, per rank: sema's shard-local update against the raw bound on the same
shards and against a gather-then-average reference (what averaging callbacks that gather full weights do).

    python -m benchmarks.overhead_fsdp2                              # gpt2 (124M) and resnet18, 2 gloo ranks, CPU
    python -m benchmarks.overhead_fsdp2 --world 2 --models gpt2 --device cuda   # one GPU per rank (NCCL)

Each of `--world` processes (spawned here) shards the model with `fully_shard` (CNNs: each top-level child, then
the root; GPT-2: each transformer layer, then the root, which keeps the tied embeddings) and times, interleaved over `--reps` repetitions (median reported, synchronised on CUDA):

* bound: one `torch._foreach_lerp_` over this rank's local shards into float32 copies (no sema, no checks);
* sema EMA update() bound to the sharded model (its average: DTensor shards, sema/sharding.py);
* gather-then-average: every parameter's full tensor all-gathered (`DTensor.full_tensor()`), then one foreach lerp
  into a full float32 average on every rank: the communication and the world-times-larger memory that a
  shard-local average avoids.

It prints, per model, the milliseconds of each, sema over the bound, the gather reference over sema, and the
average's bytes per rank against one full float32 copy. Ratios are measured in the same run, on the same shards.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import sema
from benchmarks.overhead import DECAY, MODELS, _sync, _time_once


def _shard(model: nn.Module) -> nn.Module:
    """fully_shard the transformer layers (GPT-2; tied embeddings stay in the root unit) or each top-level child
    (CNNs), then the root."""
    from torch.distributed.fsdp import fully_shard

    units = list(model.transformer.h) if hasattr(model, "transformer") else list(model.children())
    for unit in units:
        if any(True for _ in unit.parameters()):
            fully_shard(unit)
    fully_shard(model)
    return model


def _bound(model: nn.Module) -> Callable[[], None]:
    from sema.sharding import local

    shards = [local(p).detach() for p in model.parameters()]
    average = [s.float().clone() for s in shards]

    def update() -> None:
        torch._foreach_lerp_(average, shards, 1 - DECAY)

    return update


def _gather_then_average(model: nn.Module) -> Callable[[], None]:
    params = list(model.parameters())
    average = [p.full_tensor().float().clone() for p in params]

    def update() -> None:
        with torch.no_grad():
            full = [p.full_tensor() for p in params]
            torch._foreach_lerp_(average, full, 1 - DECAY)

    update.average = average
    return update


def _rank(rank: int, world: int, init: str, device_type: str, names: list[str], reps: int, out) -> None:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    if device_type == "cuda":
        torch.cuda.set_device(rank)
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo", init_method=f"file://{init}", rank=rank,
                            world_size=world)
    device = torch.device(device_type, rank) if device_type == "cuda" else torch.device("cpu")
    try:
        rows = []
        for name in names:
            torch.manual_seed(0)
            full = MODELS[name]().to(device)
            full_bytes = sum(p.numel() * 4 for p in full.parameters())
            model = _shard(full)
            ema = sema.EMA(model, decay=DECAY, buffers="ignore")
            timed = {"bound": _bound(model), "sema": ema.update, "gather": _gather_then_average(model)}
            times: dict[str, list[float]] = {k: [] for k in timed}
            for rep in range(reps + 2):  # two warm-up repetitions
                for key, fn in timed.items():
                    dist.barrier()
                    seconds = _time_once(fn, 3, device)
                    if rep >= 2:
                        times[key].append(seconds)
            _sync(device)
            ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
            rows.append({"model": name, **ms, "avg_bytes": ema._plan.average_bytes(), "full_bytes": full_bytes})
        out[rank] = rows
    finally:
        dist.destroy_process_group()


def measure(names: list[str], world: int, device_type: str, reps: int) -> list[dict]:
    """Rank 0's rows: {model, bound, sema, gather (ms), avg_bytes, full_bytes}."""
    with tempfile.TemporaryDirectory() as tmp, mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_rank, args=(world, os.path.join(tmp, "init"), device_type, names, reps, out), nprocs=world)
        return out[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["gpt2", "resnet18"], choices=list(MODELS))
    parser.add_argument("--world", type=int, default=2, help="processes (one GPU each on CUDA)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--reps", type=int, default=15, help="timed repetitions (median reported)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and torch.cuda.device_count() < args.world:
        raise SystemExit(f"--device cuda --world {args.world} needs {args.world} GPUs, found "
                         f"{torch.cuda.device_count()}; lower --world")
    rows = measure(args.models, args.world, args.device, args.reps)
    print(f"FSDP2 averaging update per rank, {args.world} ranks on {args.device}, median of {args.reps}")
    print(f"{'model':10} {'bound ms':>9} {'sema ms':>9} {'gather ms':>10} {'sema/bound':>11} {'gather/sema':>12} "
          f"{'avg/full copy':>14}")
    for r in rows:
        print(f"{r['model']:10} {r['bound']:9.3f} {r['sema']:9.3f} {r['gather']:10.3f} {r['sema'] / r['bound']:11.2f} "
              f"{r['gather'] / r['sema']:12.1f} {r['avg_bytes'] / r['full_bytes']:14.3f}")


if __name__ == "__main__":
    main()
