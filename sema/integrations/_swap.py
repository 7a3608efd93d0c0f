"""Evaluation on the averaged weights across two framework callbacks, and the method's preparation for it.

Frameworks announce the start and the end of an evaluation in separate callbacks, so a `with averager.swapped():`
block cannot span them; `EvalSwap` enters the context in one callback and leaves it in the other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any, Optional

import torch
from torch import nn

from sema.protocol import PreparesForEval, WeightAverager


class EvalSwap:
    """Holds at most one `averager.swapped()` context open at a time."""

    def __init__(self) -> None:
        self._context: Optional[AbstractContextManager] = None

    @property
    def active(self) -> bool:
        """Whether the average is in the model now."""
        return self._context is not None

    def enter(self, averager: Optional[WeightAverager]) -> None:
        """Put the average into the model, unless there is no averager or it is already in."""
        if averager is not None and self._context is None:
            self._context = averager.swapped()
            self._context.__enter__()

    def exit(self) -> None:
        """Give the model its own weights back (no-op when the average is not in)."""
        if self._context is not None:
            context, self._context = self._context, None
            context.__exit__(None, None, None)


def prepare_for_eval(averager: object, batches: Iterable[Any], forward: Callable[[Any], Any], module: nn.Module) -> bool:
    """Call the method's `prepare_for_eval(batches, forward)` hook (`sema.protocol.PreparesForEval`, e.g. SWA's
    BatchNorm re-estimation) before an evaluation of the average; a no-op for a method without it.

    The batches come from a loader of their own (`fresh_loader`), the torch random state (CPU and the module's
    CUDA devices) is restored afterwards and `module` gets its train/eval flag back, so training goes on as if
    nothing happened. Returns whether the hook ran."""
    if not isinstance(averager, PreparesForEval) or batches is None:
        return False
    devices = sorted({p.device.index for p in module.parameters() if p.device.type == "cuda"})
    was_training = module.training
    try:
        with torch.random.fork_rng(devices=devices):
            module.train()
            averager.prepare_for_eval(_FreshBatches(batches), forward)  # built only if the hook iterates it
    finally:
        module.train(was_training)
    return True


class _FreshBatches:
    """`fresh_loader(loader)`, made when first iterated: a hook with nothing to do (EMA without
    bn_update_batches) builds no loader."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def __iter__(self):
        return iter(fresh_loader(self.loader))


def fresh_loader(loader: Any, seed: int = 0) -> Any:
    """A loader of its own over the training loader's dataset (same batch size and collate function, shuffled
    with a fixed seed, no workers), so that preparing the average never draws from, resets or advances the
    iterator (or the batch sampler's state) the training loop is using. Anything else is used as it is."""
    dataset = getattr(loader, "dataset", None)
    if not isinstance(loader, torch.utils.data.DataLoader) or dataset is None:
        return loader
    batch_size = loader.batch_size or getattr(loader.batch_sampler, "batch_size", None) or 1
    if isinstance(dataset, torch.utils.data.IterableDataset):  # a stream cannot be shuffled: its own order
        return torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=loader.collate_fn,
                                           num_workers=0)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=loader.collate_fn,
                                       generator=torch.Generator().manual_seed(seed), num_workers=0)


def batch_to(batch: Any, device: torch.device) -> Any:
    """Every tensor of a (nested) batch on `device`."""
    if torch.is_tensor(batch):
        return batch.to(device)
    if isinstance(batch, dict):
        return type(batch)({k: batch_to(v, device) for k, v in batch.items()})
    if isinstance(batch, (list, tuple)):
        return type(batch)(batch_to(v, device) for v in batch)
    return batch
