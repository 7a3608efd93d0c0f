"""mmengine (mmdet 3.x, mmseg 1.x, mmpretrain): `SwitchEMAHook`, registered in mmengine's HOOKS.

In a config:

    custom_imports = dict(imports=["sema.integrations.mmengine"], allow_failed_imports=False)
    custom_hooks = [dict(type="SwitchEMAHook", decay=0.999, switch_every=1, switch_start=5, warmup_steps=2500)]

`method="sema"` by default (any name in `sema.METHODS` works; the other keys are its arguments, e.g.
`preset="mmdet", momentum=2e-4` for the detection hook's convention). The averager is bound in `before_train`
(after mmengine initialised or loaded the weights), updated in `after_train_iter`, given `epoch_end()` in
`after_train_epoch`, prepared (`prepare_for_eval`, e.g. SWA's BatchNorm re-estimation on the training data) and
swapped into the model for validation and test epochs, and saved in / resumed from
checkpoints under the key "sema". Unlike mmengine's EMAHook, checkpoints keep the model's own weights as
`state_dict`; the average is in `checkpoint["sema"]["average"]`.
"""

from __future__ import annotations

from typing import Any

import sema
from sema.integrations._swap import EvalSwap
from sema.integrations._swap import prepare_for_eval as _prepare

try:
    from mmengine.hooks import Hook
    from mmengine.registry import HOOKS
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "sema.integrations.mmengine needs mmengine: pip install 'sema-bench[mmengine]' (or pip install mmengine)"
    ) from err

CHECKPOINT_KEY = "sema"


@HOOKS.register_module()
class SwitchEMAHook(Hook):
    """Args: method (a name in sema.METHODS, default "sema"), swap_for_eval (evaluate the average, default True),
    copy_at_end (write the average into the model after training, default True), and the method's arguments."""

    priority = "NORMAL"

    def __init__(self, method: str = "sema", swap_for_eval: bool = True, copy_at_end: bool = True, **kwargs: Any):
        if method not in sema.METHODS:
            raise ValueError(f"method={method!r} is not a sema method; allowed: {', '.join(sema.METHODS)}")
        self.method, self.kwargs = method, kwargs
        self.swap_for_eval, self.copy_at_end = swap_for_eval, copy_at_end
        self.averager = None
        self._swap = EvalSwap()
        self._pending_state: dict | None = None

    def before_train(self, runner) -> None:
        if self.averager is None:
            self.averager = sema.METHODS[self.method](runner.model, **self.kwargs)  # DDP wrappers are unwrapped
        if self._pending_state is not None:
            self.averager.load_state_dict(self._pending_state)
            self._pending_state = None

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self.averager.update()

    def after_train_epoch(self, runner) -> None:
        self.averager.epoch_end()

    def before_val_epoch(self, runner) -> None:
        if self.swap_for_eval:
            prepare_for_eval(runner, self.averager)
        self._swap_in()

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._swap_out()

    def before_test_epoch(self, runner) -> None:
        if self.swap_for_eval:
            prepare_for_eval(runner, self.averager)
        self._swap_in()

    def after_test_epoch(self, runner, metrics=None) -> None:
        self._swap_out()

    def after_train(self, runner) -> None:
        self._swap_out()
        if self.copy_at_end and self.averager is not None:
            self.averager.copy_to()

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self.averager is not None:
            checkpoint[CHECKPOINT_KEY] = self.averager.state_dict()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get(CHECKPOINT_KEY)
        if state is None or not getattr(runner, "_resume", True):
            return  # `load_from` (fine-tuning) starts a fresh average from the loaded weights
        if self.averager is None:
            self._pending_state = state  # mmengine resumes before before_train: load once bound
        else:
            self.averager.load_state_dict(state)

    def _swap_in(self) -> None:
        if self.swap_for_eval:
            self._swap.enter(self.averager)

    def _swap_out(self) -> None:
        self._swap.exit()


def prepare_for_eval(runner: Any, averager: Any) -> bool:
    """The method's `prepare_for_eval` hook with mmengine's training data (e.g. SWA's BatchNorm re-estimation):
    batches from `runner.train_dataloader`, forward = the model's loss pass (data preprocessor, mode="loss").
    Returns whether the method has the hook."""
    model = runner.model.module if hasattr(runner.model, "module") else runner.model

    def forward(batch: Any) -> None:
        model(**model.data_preprocessor(batch, True), mode="loss")

    return _prepare(averager, getattr(runner, "train_dataloader", None), forward, model)
