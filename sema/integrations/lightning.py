"""PyTorch Lightning: `SEMACallback`, a `lightning.pytorch.Callback` running any `sema` method.

    from sema.integrations.lightning import SEMACallback
    trainer = lightning.Trainer(callbacks=[SEMACallback(decay=0.999, switch_every=1)])

The averager is bound to the LightningModule at `on_fit_start`, updated after every optimizer step (the callback
watches `trainer.global_step`, so gradient accumulation is handled), told about epoch ends in
`on_train_epoch_end` (SEMA switches there; Lightning has already run that epoch's validation by then), swapped in
for validation and test, saved in Lightning checkpoints through the callback state, and written into the module
when fitting ends (`copy_at_end`).
"""

from __future__ import annotations

from typing import Any

import sema
from sema.integrations._swap import EvalSwap, batch_to, prepare_for_eval

try:
    from lightning.pytorch import Callback
except ImportError as err:  # pragma: no cover - depends on the environment
    try:
        from pytorch_lightning import Callback  # the older package name
    except ImportError:
        raise ImportError(
            "sema.integrations.lightning needs PyTorch Lightning: pip install 'sema-bench[lightning]' "
            "(or pip install lightning)"
        ) from err


class SEMACallback(Callback):
    """Args: method (a name in sema.METHODS, default "sema"), swap_for_eval (validate/test the average),
    copy_at_end (write the average into the module when fit ends), and the method's own arguments."""

    def __init__(self, method: str = "sema", swap_for_eval: bool = True, copy_at_end: bool = True,
                 prepare_forward: Any = None, **kwargs: Any):
        if method not in sema.METHODS:
            raise ValueError(f"method={method!r} is not a sema method; allowed: {', '.join(sema.METHODS)}")
        self.method, self.kwargs = method, kwargs
        self.swap_for_eval, self.copy_at_end = swap_for_eval, copy_at_end
        self.prepare_forward = prepare_forward
        self.averager = None
        self._swap = EvalSwap()
        self._pending_state: dict | None = None
        self._last_step = -1

    def on_fit_start(self, trainer, pl_module) -> None:
        if self.averager is None:
            self.averager = sema.METHODS[self.method](pl_module, **self.kwargs)
        if self._pending_state is not None:
            self.averager.load_state_dict(self._pending_state)
            self._pending_state = None

    def on_train_start(self, trainer, pl_module) -> None:
        self._last_step = trainer.global_step  # after a resume, Lightning has restored it by now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step != self._last_step:  # an optimizer step happened in this batch
            self._last_step = trainer.global_step
            self.averager.update()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.averager.epoch_end()

    def on_validation_start(self, trainer, pl_module) -> None:
        self._prepare(trainer, pl_module)
        self._swap_in()

    def on_validation_end(self, trainer, pl_module) -> None:
        self._swap_out()

    def on_test_start(self, trainer, pl_module) -> None:
        self._prepare(trainer, pl_module)
        self._swap_in()

    def on_test_end(self, trainer, pl_module) -> None:
        self._swap_out()

    def on_fit_end(self, trainer, pl_module) -> None:
        self._swap_out()
        if self.copy_at_end and self.averager is not None:
            self.averager.copy_to()

    def state_dict(self) -> dict[str, Any]:
        return {} if self.averager is None else {"averager": self.averager.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = state_dict.get("averager")
        if state is None:
            return
        if self.averager is None:
            self._pending_state = state
        else:
            self.averager.load_state_dict(state)

    def _prepare(self, trainer, pl_module) -> None:
        """The method's prepare_for_eval hook (SWA's BatchNorm re-estimation) on the training batches; forward
        = `pl_module(batch[0])` for a tuple/list batch, else `pl_module(batch)` (torch's update_bn convention),
        or `prepare_forward(pl_module, batch)` when given."""
        if not self.swap_for_eval or self.averager is None:
            return
        default = (lambda m, b: m(b[0] if isinstance(b, (list, tuple)) else b))
        forward = self.prepare_forward or default
        batches = getattr(trainer, "train_dataloader", None)
        prepare_for_eval(self.averager, batches, lambda b: forward(pl_module, batch_to(b, pl_module.device)),
                         pl_module)

    def _swap_in(self) -> None:
        if self.swap_for_eval:
            self._swap.enter(self.averager)

    def _swap_out(self) -> None:
        self._swap.exit()
