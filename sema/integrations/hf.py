"""Hugging Face transformers: `SEMACallback`, a TrainerCallback running any `sema` method inside `Trainer`.

    from sema.integrations.hf import SEMACallback
    trainer = Trainer(model, args, train_dataset=..., eval_dataset=..., callbacks=[SEMACallback(decay=0.999)])

Per optimizer step (`on_step_end`, which the Trainer calls after `optimizer.step()`, once per gradient
accumulation cycle) it calls `update()`; per epoch (`on_epoch_end`) `epoch_end()` (SEMA switches there). When the
Trainer is about to evaluate, the average is swapped into the model until `on_evaluate`. `on_save` writes the
averager's state next to the checkpoint (`sema_averager.pt`); after `trainer.train(resume_from_checkpoint=path)`
it is read back from that folder (`load_averager` does the same by hand). `copy_at_end` writes the average into
the model when training ends.
"""

from __future__ import annotations

import os
from typing import Any

import torch

import sema
from sema.integrations._swap import EvalSwap, batch_to, prepare_for_eval

try:
    from transformers import TrainerCallback
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "sema.integrations.hf needs transformers: pip install 'sema-bench[hf]' (or pip install transformers)"
    ) from err

STATE_FILE = "sema_averager.pt"


class SEMACallback(TrainerCallback):
    """Args:
        method: a name in `sema.METHODS` ("sema" by default; "ema", "swa", ...).
        swap_for_eval: evaluate the average (swapped into the model during evaluation).
        copy_at_end: write the average into the model at the end of training.
        prepare_forward: `prepare_forward(model, batch)` runs the training forward pass for a method's
            `prepare_for_eval` hook (SWA's BatchNorm re-estimation); default `model(**batch)`.
        **kwargs: the method's own arguments (decay=..., switch_every=..., ...).
    """

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

    # -- lifecycle
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.averager = sema.METHODS[self.method](model, **self.kwargs)
        resume = getattr(args, "resume_from_checkpoint", None)
        if self._pending_state is not None:
            self.averager.load_state_dict(self._pending_state)
            self._pending_state = None
        elif resume and os.path.isfile(os.path.join(resume, STATE_FILE)):
            self.load_averager(resume)

    def on_step_begin(self, args, state, control, **kwargs):
        self._swap_out()  # an evaluation that did not reach on_evaluate must not leave the average in place

    def on_step_end(self, args, state, control, **kwargs):
        self.averager.update()
        self._maybe_swap_in(control, kwargs)

    def on_epoch_end(self, args, state, control, **kwargs):
        self._swap_out()
        self.averager.epoch_end()
        self._maybe_swap_in(control, kwargs)

    def on_evaluate(self, args, state, control, **kwargs):
        self._swap_out()

    def on_save(self, args, state, control, **kwargs):
        self._swap_out()
        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        if state.is_world_process_zero and os.path.isdir(folder):
            torch.save(self.averager.state_dict(), os.path.join(folder, STATE_FILE))

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._swap_out()
        if self.copy_at_end:
            self.averager.copy_to()

    # -- helpers
    def load_averager(self, checkpoint_dir: str) -> None:
        """Restore the averager saved by `on_save` in `checkpoint_dir` (now, or when training starts)."""
        state = torch.load(os.path.join(checkpoint_dir, STATE_FILE), weights_only=True)
        if self.averager is None:
            self._pending_state = state
        else:
            self.averager.load_state_dict(state)

    def _maybe_swap_in(self, control, event: dict) -> None:
        if self.swap_for_eval and control.should_evaluate:
            self._prepare(event.get("model"), event.get("train_dataloader"))
            self._swap.enter(self.averager)

    def _prepare(self, model, batches) -> None:
        """The method's prepare_for_eval hook (SWA's BatchNorm re-estimation) on the Trainer's training batches,
        forward = `model(**batch)` on the model's device (or `prepare_forward(model, batch)` when given)."""
        if model is None:
            return
        device = next(model.parameters()).device
        forward = self.prepare_forward or (lambda m, batch: m(**batch))
        prepare_for_eval(self.averager, batches, lambda batch: forward(model, batch_to(batch, device)), model)

    def _swap_out(self) -> None:
        self._swap.exit()
