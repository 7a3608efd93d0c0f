"""Re-estimate BatchNorm statistics of an averaged model (the usual last step of SWA).

Averaged weights do not match averaged (or stale) BatchNorm statistics exactly; SWA therefore recomputes them
with one pass over training data. This is `torch.optim.swa_utils.update_bn` with the same semantics (reset the
statistics of every `_BatchNorm` module, set momentum=None so each layer takes the cumulative mean over the pass,
train mode during the pass, momenta and the train/eval flag restored afterwards), plus what users asked for
(pytorch/pytorch#49082): any batch format through a `forward_fn`, a batch limit, and no autograd graph.

    sema.bn.update_bn(train_loader, avg.average, forward_fn=lambda m, b: m(b["image"]), max_batches=200)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn


def _default_forward(device: torch.device | str | None) -> Callable[[nn.Module, Any], Any]:
    def forward(model: nn.Module, batch: Any) -> Any:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch  # swa_utils' convention
        return model(x.to(device) if device is not None else x)

    return forward


@torch.no_grad()
def update_bn(
    batches: Iterable[Any],
    model: nn.Module,
    forward_fn: Callable[[nn.Module, Any], Any] | None = None,
    device: torch.device | str | None = None,
    max_batches: int | None = None,
) -> int:
    """Recompute the running statistics of every BatchNorm layer of `model` from `batches`; returns the number
    of batches used (0 and nothing changed if `model` has no BatchNorm layer).

    Args:
        batches: an iterable of batches (e.g. the training DataLoader).
        model: the module to recalibrate, normally `avg.average`. Recalibrating the bound model inside
            `avg.swapped()` works for a model whose tensors share the average's dtype (the exchange carries the new
            statistics into the average on exit) but drops them for a bf16 model with a float32 average, unless
            they are copied into the average afterwards, as `sema.SWA.prepare_for_eval` does.
        forward_fn: `forward_fn(model, batch)` runs the model on one batch; default: `model(batch)`, or
            `model(batch[0])` for a list/tuple batch, moved to `device` if given (as swa_utils does).
        max_batches: stop after this many batches (None: the whole iterable).
    """
    if max_batches is not None and (not isinstance(max_batches, int) or max_batches < 1):
        raise ValueError(f"max_batches={max_batches!r} must be None or an integer >= 1")
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not layers:
        return 0
    forward = forward_fn or _default_forward(device)
    momenta = {m: m.momentum for m in layers}
    was_training = model.training
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the pass
    model.train()
    used = 0
    try:
        for batch in batches:
            if max_batches is not None and used >= max_batches:
                break
            forward(model, batch)
            used += 1
    finally:
        for m, momentum in momenta.items():
            m.momentum = momentum
        model.train(was_training)
    return used


def recompute_average_bn(plan: Any, average: nn.Module, batches: Iterable[Any], forward: Callable[[Any], Any],
                         max_batches: int | None) -> None:
    """A method's `prepare_for_eval` BatchNorm re-estimation (SWA's; EMA/SEMA with `bn_update_batches`): inside
    `plan.swapped()` (the bound model holds the averaged weights), `update_bn` over the first `max_batches` of
    `batches` with `forward(batch)` (the training forward pass), and the new statistics kept in `average`. The
    model's own weights and statistics come back bit for bit. A no-op without BatchNorm layers or `max_batches`."""
    module = plan.module
    layers = {name: m for name, m in module.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    if max_batches is None or not layers:
        return
    was_training = module.training
    with plan.swapped():
        update_bn(batches, module, forward_fn=lambda _module, batch: forward(batch), max_batches=max_batches)
        stats = {f"{name}.{key}" if name else key: b.detach().clone()
                 for name, m in layers.items() for key, b in m.named_buffers(recurse=False)}
    module.train(was_training)
    # swapped() exchanges storage for most models (the new statistics are in the average already); a staged model
    # (bf16 model, float32 average) is restored from a backup instead, which drops them: copy them in.
    mine = dict(average.named_buffers())
    with torch.no_grad():
        for name, value in stats.items():
            mine[name].copy_(value)


def check_bn_update_batches(value: int | None, buffers: str) -> int | None:
    """`bn_update_batches` as given (None, or an integer >= 1); ValueError when it is not one, or when the average
    keeps no BatchNorm statistics of its own (buffers='ignore')."""
    if value is None:
        return None
    from sema.schedules import check_positive_int

    check_positive_int("bn_update_batches", value)
    if buffers == "ignore":
        raise ValueError("bn_update_batches needs buffers='average' or 'copy': with buffers='ignore' the average "
                         "has no BatchNorm statistics of its own (set bn_update_batches=None)")
    return value
