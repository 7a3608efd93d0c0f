"""Hugging Face transformers: `SEMACallback`, a TrainerCallback running any `sema` method inside `Trainer`.

    from sema.integrations.hf import SEMACallback
    trainer = Trainer(model, args, train_dataset=..., eval_dataset=..., callbacks=[SEMACallback(decay=0.999)])

Per optimizer step (`on_step_end`, which the Trainer calls after `optimizer.step()`, once per gradient
accumulation cycle) it calls `update()`; per epoch (`on_epoch_end`) `epoch_end()` (SEMA switches there).

The Trainer gives its callbacks no reference to itself and no event before an evaluation or a checkpoint, so the
callback attaches itself to the Trainer that calls it (found on the call stack at `on_init_end`, or at
`on_train_begin` for a callback added with `add_callback`; `attach(trainer)` does it by hand) and wraps three of
that Trainer's methods on the instance (the class is untouched):

- `evaluate`: every evaluation, during training or standalone (`trainer.evaluate()` after training or on a fresh
  Trainer), runs with the average swapped in, after the method's `prepare_for_eval` hook. Without an averager
  (no training yet and no `load_averager`) it evaluates the model as it is. `predict` is not wrapped.
- `_save_checkpoint`: a checkpoint's model weights (`model.safetensors`) are the average, the weights its
  evaluation saw; the online weights are saved beside them (`sema_online.pt`) with the averager's state
  (`sema_averager.pt`), both written (atomically) after the Trainer's own files. FSDP/DeepSpeed-sharded Trainers
  are refused when training starts (every process must hold the whole model). With `swap_for_eval=False` the model file
  holds the online weights (the evaluated ones) and there is no `sema_online.pt`.
- `train`: notes `resume_from_checkpoint`; `on_train_begin` then puts that folder's online weights back into the
  model (the Trainer has just loaded its average) and restores the averager, so training goes on bit for bit.

When training ends, `copy_at_end` writes the average into the model, except when the Trainer has loaded its best
checkpoint (`load_best_model_at_end`): the callback then restores that checkpoint's averager and the model keeps
the loaded weights, the ones whose metric made the checkpoint best (the average under `swap_for_eval`), so the
model, the average and `state.best_metric` all belong to the same checkpoint.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Any

import torch

import sema
from sema.integrations._swap import batch_to, prepare_for_eval

try:
    from transformers import Trainer, TrainerCallback
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "sema.integrations.hf needs transformers: pip install 'sema-bench[hf]' (or pip install transformers)"
    ) from err

STATE_FILE = "sema_averager.pt"  # the averager's state_dict()
ONLINE_FILE = "sema_online.pt"  # the model's own (trained) state_dict, when the model file holds the average
WRAPPED = ("evaluate", "_save_checkpoint", "train")  # the Trainer methods the callback wraps


class SEMACallback(TrainerCallback):
    """Args:
        method: a name in `sema.METHODS` ("sema" by default; "ema", "swa", ...).
        swap_for_eval: evaluate the average (swapped into the model during `Trainer.evaluate`), and save it as the
            checkpoints' model weights (the online weights beside it).
        copy_at_end: write the average into the model at the end of training (not after `load_best_model_at_end`
            has loaded the best checkpoint: see the module docstring).
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
        self._model = None  # the model the averager is bound to
        self._pending_state: dict | None = None  # from load_averager, for the next training (and evaluations)
        self._trainer = None
        self._inner: dict[str, Any] = {}  # instance-level methods the wrappers replaced (usually none)
        self._resume_dir: str | None = None
        self._evaluating = False

    # -- lifecycle
    def on_init_end(self, args, state, control, **kwargs):
        trainer = _calling_trainer()
        if trainer is not None:
            self.attach(trainer)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        trainer = _calling_trainer()
        if trainer is not None and trainer is not self._trainer:  # added with add_callback, or moved to it
            self.attach(trainer)
            if state.global_step > 0:
                raise RuntimeError(
                    "this Trainer resumes from a checkpoint, but SEMACallback was attached to it only now (added "
                    "with trainer.add_callback?), so it cannot tell which checkpoint: pass it in "
                    "Trainer(callbacks=[...]) or call callback.attach(trainer) before trainer.train()")
        if self._trainer is None:
            raise RuntimeError("SEMACallback found no transformers Trainer calling it; call "
                               "callback.attach(trainer) before training")
        sharded = [name for name in ("is_fsdp_enabled", "is_deepspeed_enabled") if getattr(self._trainer, name, False)]
        if sharded:
            raise RuntimeError(f"SEMACallback averages a model every process holds whole; this Trainer shards it "
                               f"({sharded[0][3:-8]}). Train without FSDP/DeepSpeed sharding (DDP works), or use "
                               "sema-bench's engine, whose trainer.strategy=fsdp2 averages sharded models")
        model = self._trainer.model  # with model_init, the `model` argument is the Trainer's first model
        resume = self._resume_dir
        needed = [STATE_FILE, *([ONLINE_FILE] if self.swap_for_eval else [])]
        lacking = [name for name in needed if resume is not None and not os.path.isfile(os.path.join(resume, name))]
        if lacking:  # e.g. killed between the Trainer's files and ours: its model file may hold the average
            raise RuntimeError(f"{resume} lacks {', '.join(lacking)} (a checkpoint written without SEMACallback, or "
                               "one interrupted while saving): resume from the previous checkpoint-* folder")
        if resume is not None and os.path.isfile(os.path.join(resume, ONLINE_FILE)):
            model.load_state_dict(_load(resume, ONLINE_FILE))  # the Trainer has loaded the checkpoint's average
        self._bind(model)
        if resume is not None and os.path.isfile(os.path.join(resume, STATE_FILE)):
            self.averager.load_state_dict(_load(resume, STATE_FILE))
        elif self._pending_state is not None:
            self.averager.load_state_dict(self._pending_state)

    def on_step_end(self, args, state, control, **kwargs):
        self.averager.update()

    def on_epoch_end(self, args, state, control, **kwargs):
        self.averager.epoch_end()

    def on_train_end(self, args, state, control, model=None, **kwargs):
        best = state.best_model_checkpoint if args.load_best_model_at_end else None
        if best is not None:  # the Trainer has just loaded it (the same condition as Trainer._finalize_training)
            if os.path.isfile(os.path.join(best, STATE_FILE)):
                self.averager.load_state_dict(_load(best, STATE_FILE))
            return  # the model keeps the best checkpoint's weights: copy_at_end does not overwrite them
        if self.copy_at_end:
            self.averager.copy_to()

    # -- the Trainer
    def attach(self, trainer: Any) -> None:
        """Wrap `trainer`'s `evaluate`, `_save_checkpoint` and `train` (see the module docstring). Done
        automatically when the Trainer calls the callback; a callback serves one Trainer at a time, so attaching
        it to another one detaches it from the first."""
        if trainer is self._trainer:
            return
        missing = [name for name in WRAPPED if not callable(getattr(type(trainer), name, None))]
        if missing:
            raise TypeError(f"SEMACallback attaches to a transformers Trainer; {type(trainer).__name__} has no "
                            f"{', '.join(missing)}")
        self._detach()
        self._trainer = trainer
        self._inner = {name: trainer.__dict__.get(name) for name in WRAPPED}
        for name in WRAPPED:  # a partial of a bound method, not a closure: the Trainer still pickles
            setattr(trainer, name, functools.partial(self._around, trainer, name))

    def _detach(self) -> None:
        trainer, self._trainer = self._trainer, None
        for name, inner in self._inner.items():
            if inner is None:
                trainer.__dict__.pop(name, None)
            else:
                setattr(trainer, name, inner)
        self._inner = {}

    def _around(self, trainer, name: str, *args: Any, **kwargs: Any) -> Any:
        inner = self._inner.get(name) or functools.partial(getattr(type(trainer), name), trainer)
        wrapper = {"evaluate": self._evaluate, "_save_checkpoint": self._save_checkpoint, "train": self._train}
        return wrapper[name](trainer, inner, *args, **kwargs)

    def _evaluate(self, trainer, inner, *args: Any, **kwargs: Any) -> Any:
        averager = self._averager_for(trainer.model)
        if self._evaluating or not self.swap_for_eval or averager is None:
            return inner(*args, **kwargs)
        self._evaluating = True  # a dict of eval datasets: evaluate() calls itself once per dataset
        try:
            self._prepare(trainer.model, trainer.callback_handler.train_dataloader)
            with averager.swapped():
                return inner(*args, **kwargs)
        finally:
            self._evaluating = False

    def _save_checkpoint(self, trainer, inner, *args: Any, **kwargs: Any) -> Any:
        if self.averager is None or self._model is not trainer.model:
            return inner(*args, **kwargs)
        if self.swap_for_eval:
            with self.averager.swapped():  # on every rank: the Trainer's save may gather across them
                output = inner(*args, **kwargs)
        else:
            output = inner(*args, **kwargs)
        if trainer.args.should_save:  # after the Trainer's files, each written atomically: a kill in between
            trial = kwargs.get("trial", args[1] if len(args) > 1 else None)  # leaves no half-written file
            run_dir = (trainer._get_output_dir(trial=trial) if hasattr(trainer, "_get_output_dir")
                       else trainer.args.output_dir)
            folder = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{trainer.state.global_step}")
            os.makedirs(folder, exist_ok=True)
            if self.swap_for_eval:
                _save_atomic(trainer.model.state_dict(), os.path.join(folder, ONLINE_FILE))
            _save_atomic(self.averager.state_dict(), os.path.join(folder, STATE_FILE))
        return output

    def _train(self, trainer, inner, *args: Any, **kwargs: Any) -> Any:
        resume = kwargs.get("resume_from_checkpoint", args[0] if args else None)
        if resume is True:
            resume = get_last_checkpoint(trainer.args.output_dir)  # None: the Trainer raises its own error
        self._resume_dir = os.fspath(resume) if resume else None
        try:
            output = inner(*args, **kwargs)
        finally:
            self._resume_dir = None
        self._pending_state = None  # used by this training
        return output

    # -- helpers
    def load_averager(self, checkpoint_dir: str) -> None:
        """Restore the averager saved in `checkpoint_dir`: now when the callback has one, and for the next
        training (unless it resumes from a checkpoint, whose own state wins) and evaluations until then."""
        state = _load(checkpoint_dir, STATE_FILE)
        if self.averager is not None:
            self.averager.load_state_dict(state)
        self._pending_state = state

    def _bind(self, model) -> None:
        self.averager = sema.METHODS[self.method](model, **self.kwargs)
        self._model = model

    def _averager_for(self, model):
        """The averager bound to `model`, one built from `load_averager`'s state, or None."""
        if self.averager is not None and self._model is model:
            return self.averager
        if self._pending_state is None or model is None:
            return None
        self._bind(model)
        self.averager.load_state_dict(self._pending_state)
        return self.averager

    def _prepare(self, model, batches) -> None:
        """The method's prepare_for_eval hook (SWA's BatchNorm re-estimation) on the Trainer's training batches
        (none before the first training: the hook is skipped), forward = `model(**batch)` on the model's device
        (or `prepare_forward(model, batch)` when given)."""
        device = next(model.parameters()).device
        forward = self.prepare_forward or (lambda m, batch: m(**batch))
        prepare_for_eval(self.averager, batches, lambda batch: forward(model, batch_to(batch, device)), model)


def _calling_trainer(depth: int = 8):
    """The Trainer whose method is running the current callback event, or None: the nearest `self` on the call
    stack that is a Trainer (callback <- CallbackHandler.call_event <- CallbackHandler.on_<event> <- Trainer)."""
    frame = sys._getframe(1)
    for _ in range(depth):
        if frame is None:
            return None
        owner = frame.f_locals.get("self")
        if isinstance(owner, Trainer):
            return owner
        frame = frame.f_back
    return None


def _save_atomic(obj: Any, path: str) -> None:
    tmp = f"{path}.tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _load(folder: str, name: str) -> dict:
    return torch.load(os.path.join(folder, name), map_location="cpu", weights_only=True)
