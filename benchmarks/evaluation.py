"""Evaluation the engine can split across ranks (`TaskSetup.sharded_evaluation`): no rank waits for another.

    spec = ShardedEvaluation(dataset, batch_size, batch_sums, finish)
    metrics = evaluate_sharded(spec, model, device)                      # one process: the whole set
    metrics = evaluate_sharded(spec, model, device, rank, world_size)    # torchrun: every rank calls it

Each rank evaluates its own contiguous shard of the evaluation set, examples [floor(r n / W), floor((r+1) n / W)),
so every example is evaluated exactly once (no padding, no duplicates, none dropped). Two ways to reduce:

* `batch_sums(model, batch)`: sums and counts over the batch (a dict of tensors of any shape, e.g. a confusion
  matrix); added over batches on the device (one host read at the end), then over ranks (all_reduce SUM).
  Counts are exact; sums of floats agree with one process to rounding (another summation order).
* `batch_outputs(model, batch)`: per-example outputs (a dict of tensors, first dimension = examples, or of lists,
  e.g. COCO result dicts), gathered
  from every rank in rank order, which is the dataset's order: the metric then sees exactly what one process
  would (AP, medians, per-group errors).

`finish(totals)` turns the float64 totals (or the concatenated outputs) into metrics, on every rank.

Under FSDP2 every forward is a collective (parameters are gathered), so ranks must run the same number of
batches: a rank whose shard has fewer batches than the largest one runs its first batch again for each missing
one and discards the result ("lockstep"; found from the model, nothing to configure).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from benchmarks.runtime import to_device
from sema.sharding import fsdp_modules


@dataclass
class ShardedEvaluation:
    """An evaluation as sums over batches (see the module docstring)."""

    dataset: Dataset  # the evaluation examples
    batch_size: int  # evaluation batch size per rank
    batch_sums: Optional[Callable[[nn.Module, Any], dict[str, torch.Tensor]]]  # (model, batch) -> sums, counts
    finish: Callable[[dict[str, torch.Tensor]], dict[str, Any]]  # totals (or outputs) -> metrics
    batch_outputs: Optional[Callable[[nn.Module, Any], dict[str, torch.Tensor]]] = None  # or: per-example outputs
    collate_fn: Optional[Callable[[list], Any]] = None  # DataLoader collate function; None = default
    num_workers: int = 0  # loader workers


def shard(n: int, rank: int, world_size: int) -> range:
    """The indices rank `rank` of `world_size` evaluates."""
    return range(n * rank // world_size, n * (rank + 1) // world_size)


@torch.no_grad()
def evaluate_sharded(spec: ShardedEvaluation, model: nn.Module, device: torch.device, rank: int = 0,
                     world_size: int = 1) -> dict[str, float]:
    """The metrics of `model` over the whole evaluation set, computed jointly by `world_size` ranks."""
    part = Subset(spec.dataset, list(shard(len(spec.dataset), rank, world_size)))
    loader = DataLoader(part, batch_size=spec.batch_size, shuffle=False, collate_fn=spec.collate_fn,
                        num_workers=spec.num_workers)
    if spec.batch_outputs is not None:
        return _finish(spec, _gathered(spec, model, loader, device, rank, world_size))
    totals: dict[str, torch.Tensor] = {}
    for batch in loader:
        for key, value in spec.batch_sums(model, to_device(batch, device)).items():
            value = value.detach().to(torch.float64)
            totals[key] = totals[key] + value if key in totals else value
    _lockstep(spec, model, loader, device, rank, world_size)  # before any collective of the reduction
    if world_size > 1:  # one all_reduce of everything, flattened, in an order and shapes all ranks agree on
        layouts: list = [None] * world_size
        torch.distributed.all_gather_object(layouts, {k: tuple(v.shape) for k, v in totals.items()})
        layout = next((lay for lay in layouts if lay), {})  # a rank with an empty shard adds zeros
        for key, shape in layout.items():
            totals.setdefault(key, torch.zeros(shape, dtype=torch.float64, device=device))
        keys = sorted(layout)
        shapes = [totals[k].shape for k in keys]
        packed = torch.cat([totals[k].flatten() for k in keys])
        torch.distributed.all_reduce(packed)
        totals, offset = {}, 0
        for key, shape in zip(keys, shapes):
            size = shape.numel()
            totals[key], offset = packed[offset:offset + size].view(shape), offset + size
    return _finish(spec, {k: v.cpu() for k, v in totals.items()})


def _lockstep(spec: ShardedEvaluation, model: Optional[nn.Module], loader: DataLoader, device: torch.device,
              rank: int, world_size: int) -> None:
    """FSDP2: run (and discard) as many extra batches as this rank's shard is short of the largest shard's."""
    if world_size == 1 or model is None or not fsdp_modules(model):
        return
    n = len(spec.dataset)
    most = max(-(-len(shard(n, r, world_size)) // spec.batch_size) for r in range(world_size))
    missing = most - len(loader)
    if missing <= 0:
        return
    source = loader if len(loader) else DataLoader(Subset(spec.dataset, [0]), batch_size=1,
                                                   collate_fn=spec.collate_fn)
    filler = to_device(next(iter(source)), device)
    run = spec.batch_outputs if spec.batch_outputs is not None else spec.batch_sums
    for _ in range(missing):
        run(model, filler)


def _gathered(spec: ShardedEvaluation, model: nn.Module, loader: DataLoader, device: torch.device, rank: int,
              world_size: int) -> dict[str, torch.Tensor]:
    parts: dict[str, list] = {}
    for batch in loader:
        for key, value in spec.batch_outputs(model, to_device(batch, device)).items():
            parts.setdefault(key, []).append(value.detach().cpu() if torch.is_tensor(value) else list(value))
    mine = {k: _joined(v) for k, v in parts.items()}
    _lockstep(spec, model, loader, device, rank, world_size)  # before the gather
    if world_size == 1:
        return mine
    everyone: list = [None] * world_size
    torch.distributed.all_gather_object(everyone, mine)  # rank order = dataset order
    keys = next(d for d in everyone if d).keys()
    return {k: _joined([d[k] for d in everyone if d]) for k in keys}


def _joined(parts: list) -> Any:
    """Tensors concatenated along the examples, lists (e.g. COCO result dicts) chained."""
    return torch.cat(parts) if torch.is_tensor(parts[0]) else [item for part in parts for item in part]


def _finish(spec: ShardedEvaluation, values: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: float(v) for k, v in spec.finish(values).items()}
