"""Facts about where a run executes, derived in one place: the dataset cache, batches on the device, the number of
optimizer steps an epoch has.

    cache_dir()                                   # $SEMA_BENCH_CACHE, else ~/.cache/sema-bench
    to_device(batch, device)                      # every tensor of a nested batch (tuples, lists, dicts)
    steps_per_epoch(n, batch_size, world_size, drop_last, cap)

Steps per epoch, as the engine's DataLoader (with a DistributedSampler under torchrun) gives them:

    per_rank = floor(n / world_size) if drop_last else ceil(n / world_size)
    steps = floor(per_rank / batch_size) if drop_last else ceil(per_rank / batch_size);   min(steps, cap)
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Optional

import torch


def cache_dir() -> Path:
    """Where embedded datasets are prepared once and reused: $SEMA_BENCH_CACHE, else ~/.cache/sema-bench."""
    return Path(os.environ.get("SEMA_BENCH_CACHE", Path.home() / ".cache" / "sema-bench"))


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor in a (nested) batch to `device`; objects with `.to` (e.g. HF BatchEncoding) too."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        moved = [to_device(v, device) for v in batch]
        return type(batch)(*moved) if hasattr(batch, "_fields") else type(batch)(moved)
    if hasattr(batch, "to") and callable(batch.to):
        return batch.to(device)
    return batch


def steps_per_epoch(num_examples: int, batch_size: int, world_size: int = 1, drop_last: bool = True,
                    cap: Optional[int] = None) -> int:
    """Optimizer steps in one epoch of `num_examples` (see the module docstring for the formula)."""
    if world_size > 1:
        per_rank = num_examples // world_size if drop_last else math.ceil(num_examples / world_size)
    else:
        per_rank = num_examples
    steps = per_rank // batch_size if drop_last else math.ceil(per_rank / batch_size)
    return min(steps, cap) if cap else steps
