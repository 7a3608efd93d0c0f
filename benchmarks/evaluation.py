"""Evaluation the engine can split across ranks (`TaskSetup.sharded_evaluation`): no rank waits for another.

    spec = ShardedEvaluation(dataset, batch_size, batch_sums, finish)
    metrics = evaluate_sharded(spec, model, device)                      # one process: the whole set
    metrics = evaluate_sharded(spec, model, device, rank, world_size)    # torchrun: every rank calls it

Each rank evaluates its own contiguous shard of the evaluation set, examples [floor(r n / W), floor((r+1) n / W)),
so every example is evaluated exactly once (no padding, no duplicates, none dropped). `batch_sums(model, batch)`
returns sums and counts over the batch (a dict of tensors); they are added over batches on the device (one host
read at the end), then over ranks (all_reduce SUM), and `finish(sums)` turns the totals into metrics on every rank.
Counts are therefore exact; sums of floats agree with one process to rounding (another summation order).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from benchmarks.runtime import to_device


@dataclass
class ShardedEvaluation:
    """An evaluation as sums over batches (see the module docstring)."""

    dataset: Dataset  # the evaluation examples
    batch_size: int  # evaluation batch size per rank
    batch_sums: Callable[[nn.Module, Any], dict[str, torch.Tensor]]  # (model, batch on device) -> sums, counts
    finish: Callable[[dict[str, float]], dict[str, float]]  # totals -> metrics
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
    totals: dict[str, torch.Tensor] = {}
    for batch in loader:
        for key, value in spec.batch_sums(model, to_device(batch, device)).items():
            value = value.detach().to(torch.float64)
            totals[key] = totals[key] + value if key in totals else value
    if world_size > 1:
        keys = sorted(totals)  # every rank holds the same keys once it evaluated a batch
        packed = torch.stack([totals[k] for k in keys]) if keys else torch.zeros(0, dtype=torch.float64,
                                                                                  device=device)
        torch.distributed.all_reduce(packed)
        totals = dict(zip(keys, packed))
    return spec.finish({k: float(v) for k, v in totals.items()})
