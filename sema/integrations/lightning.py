"""PyTorch Lightning: `SEMACallback`, a `lightning.pytorch.Callback` running any `sema` method.

    from sema.integrations.lightning import SEMACallback
    trainer = lightning.Trainer(callbacks=[SEMACallback(decay=0.999, switch_every=1)])

The averager is bound to the LightningModule at `on_fit_start`, updated after every optimizer step (the callback
watches `trainer.global_step`, so gradient accumulation is handled), told about epoch ends in
`on_train_epoch_end` (SEMA switches there; Lightning has already run that epoch's validation by then), and written
into the module when fitting ends (`copy_at_end`).

Validation and test run with the average swapped in (`swap_for_eval`), inside `fit` and standalone
(`trainer.validate()` / `trainer.test()`, also with `ckpt_path=`: the checkpoint's averager is used). Without an
averager (never fitted, no checkpoint loaded) they evaluate the module as it is; `predict` is not swapped.

Checkpoints hold what was evaluated: with `swap_for_eval`, a checkpoint's `state_dict` is the average (what
`LightningModule.load_from_checkpoint` and `ckpt_path="best"` give), and the callback's state holds the averager
and the module's own weights (`"online"`), which `fit(ckpt_path=...)` puts back into the module so training goes
on bit for bit. A weights-only checkpoint (`ModelCheckpoint(save_weights_only=True)`) calls no callback hook and
holds the module's own weights (the callback warns at `on_fit_start`).
"""

from __future__ import annotations

import warnings
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
    """Args: method (a name in sema.METHODS, default "sema"), swap_for_eval (validate/test the average and save
    it as the checkpoints' state_dict), copy_at_end (write the average into the module when fit ends),
    prepare_forward (see `_prepare`), and the method's own arguments."""

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
        self._ensure_averager(pl_module, create=True)
        weights_only = any(getattr(c, "save_weights_only", False) for c in trainer.checkpoint_callbacks)
        if self.swap_for_eval and weights_only:
            warnings.warn("SEMACallback: a ModelCheckpoint with save_weights_only=True writes the module's own "
                          "weights, not the evaluated average (Lightning calls no callback hook for it)",
                          stacklevel=2)

    def on_train_start(self, trainer, pl_module) -> None:
        self._last_step = trainer.global_step  # after a resume, Lightning has restored it by now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step != self._last_step:  # an optimizer step happened in this batch
            self._last_step = trainer.global_step
            self.averager.update()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.averager.epoch_end()

    def on_validation_start(self, trainer, pl_module) -> None:
        self._ensure_averager(pl_module, create=False)
        self._prepare(trainer, pl_module)
        self._swap_in()

    def on_validation_end(self, trainer, pl_module) -> None:
        self._swap_out()

    def on_test_start(self, trainer, pl_module) -> None:
        self._ensure_averager(pl_module, create=False)
        self._prepare(trainer, pl_module)
        self._swap_in()

    def on_test_end(self, trainer, pl_module) -> None:
        self._swap_out()

    def on_fit_end(self, trainer, pl_module) -> None:
        self._swap_out()
        if self.copy_at_end and self.averager is not None:
            self.averager.copy_to()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._swap_out()  # a failed validation must not leave the average in the module

    def state_dict(self) -> dict[str, Any]:
        if self.averager is None:
            return {}
        if not self._swap.active:
            return {"averager": self.averager.state_dict()}
        self._swap_out()  # a save during validation: Lightning asks for this before on_save_checkpoint
        try:
            return {"averager": self.averager.state_dict()}
        finally:
            self._swap_in()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = state_dict.get("averager")  # "online" is restored by on_load_checkpoint
        if state is None:
            return
        if self.averager is None:
            self._pending_state = state
        else:
            self.averager.load_state_dict(state)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        """The checkpoint's state_dict becomes the average (in the module's dtype, as evaluated); the module's
        own weights go into this callback's state as "online"."""
        if not self.swap_for_eval or self.averager is None:
            return
        was_in = self._swap.active  # a save during validation: the module holds the average right now
        self._swap_out()
        online = pl_module.state_dict()
        if set(online) != set(checkpoint["state_dict"]):
            raise ValueError("SEMACallback(swap_for_eval=True) saves the average as the checkpoint's state_dict, "
                             "but this strategy's checkpoint state_dict is not named like the LightningModule's "
                             "(a sharded strategy?); use swap_for_eval=False")
        with self.averager.swapped():
            average = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        if was_in:
            online = {k: v.detach().clone() for k, v in online.items()}
            self._swap_in()
        checkpoint["state_dict"] = average
        checkpoint["callbacks"][self.state_key]["online"] = online

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        """Resuming a fit: Lightning has just loaded the checkpoint's state_dict (the average) into the module;
        give it its own weights back. Validate/test keep the average."""
        online = (checkpoint.get("callbacks") or {}).get(self.state_key, {}).get("online")
        if online is not None and trainer.state.fn == "fit":
            pl_module.load_state_dict(online, strict=getattr(pl_module, "strict_loading", True))

    def _ensure_averager(self, pl_module, create: bool) -> None:
        """Bind the averager (when `create`, or to use a state loaded from a checkpoint) and load that state."""
        if self.averager is None and (create or self._pending_state is not None):
            self.averager = sema.METHODS[self.method](pl_module, **self.kwargs)
        if self.averager is not None and self._pending_state is not None:
            self.averager.load_state_dict(self._pending_state)
            self._pending_state = None

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
