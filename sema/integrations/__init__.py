"""Adapters that run a `sema` averager inside a training framework. Each module imports its framework when it is
itself imported (never from `import sema`), and says which extra to install when the framework is missing:

    sema.integrations.hf         SEMACallback, a transformers TrainerCallback            pip install "sema-bench[hf]"
    sema.integrations.mmengine   SwitchEMAHook, an mmengine Hook in mmengine's HOOKS      pip install "sema-bench[mmengine]"
    sema.integrations.lightning  SEMACallback, a lightning.pytorch Callback               pip install "sema-bench[lightning]"

Common behaviour: the averager (`method=` any name in `sema.METHODS`, other keyword arguments passed to it) is
bound when training starts, updated after every optimizer step, told about every epoch end, swapped in for
validation/evaluation (`swap_for_eval=True`), saved in and restored from the framework's checkpoints, and written
into the model when training ends (`copy_at_end=True`, so the trained model you save is the average).

What a checkpoint calls its model (docs/sema.md, "Evaluation and checkpoints"): with transformers and Lightning it
is the average that was evaluated (so `load_best_model_at_end` / a best-checkpoint callback return the evaluated
weights), the online weights are kept beside it, and a resume restores them; a standalone `trainer.evaluate()` /
`validate()` / `test()` evaluates the average too. The mmengine hook follows mmengine's own EMAHook layout instead:
the averager's state under "sema", the online weights as the checkpoint's `state_dict`.
"""
