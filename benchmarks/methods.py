"""Method config -> `sema` object. The engine never looks at a method's name; it only calls what this returns.

`build_averager(cfg.method, module, steps_per_epoch)` builds `sema.METHODS[method.averager](module, **kwargs)`,
or returns None when `method.averager` is null (the baseline: no averaging). The keyword arguments are the method
config's fields (see `benchmarks.config.MethodConfig` for the conversion rules):

* None values are left out, so `sema`'s own defaults apply;
* `<x>_epochs` fields become `<x>_steps = round(epochs * steps_per_epoch)` (e.g. `warmup_epochs` -> `warmup_steps`);
* `switch_start` / `switch_end` are in epochs; with `switch_unit="step"` they are converted to steps too;
* without `switch_every` the method does not switch, and no `switch_*` keyword is passed;
* with `warmup="none"` there is no decay warm-up, and no `warmup*` keyword is passed.

Hooks a method object may expose (the engine calls them when present, for every method alike):

* `wrap_optimizer(optimizer) -> optimizer`: methods that act on the optimizer (Lookahead) wrap it here; the engine
  trains with what this returns and checkpoints its `state_dict()`.

Engine-side method fields (read by the engine, never passed to sema):

* `bn_update_batches`: re-estimate the average's BatchNorm statistics (`sema.bn.update_bn`) from up to this many
  training batches before each evaluation of the average; see `bn_update_batches()` below.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from torch import nn

_NOT_ARGUMENTS = ("name", "averager", "bn_update_batches")  # benchmark-side fields, never passed to sema


def _as_dict(method_cfg: Any) -> dict[str, Any]:
    if isinstance(method_cfg, DictConfig):
        return OmegaConf.to_container(method_cfg, resolve=True)
    if dataclasses.is_dataclass(method_cfg):
        return dataclasses.asdict(method_cfg)
    return dict(method_cfg)


def _whole(name: str, value: float) -> int:
    if float(value) != int(value):
        raise ValueError(f"method.{name}={value!r} must be a whole number of epochs with switch_unit=epoch")
    return int(value)


def averager_kwargs(method_cfg: Any, steps_per_epoch: int) -> dict[str, Any]:
    """The keyword arguments for `sema.METHODS[averager]`, with epoch-based fields converted to steps."""
    fields = {k: v for k, v in _as_dict(method_cfg).items() if k not in _NOT_ARGUMENTS and v is not None}
    if "switch_every" not in fields:
        fields = {k: v for k, v in fields.items() if not k.startswith("switch_")}
    if fields.get("warmup") == "none":
        fields = {k: v for k, v in fields.items() if not k.startswith("warmup")}
    kwargs: dict[str, Any] = {}
    step_unit = fields.get("switch_unit") == "step"
    for key, value in fields.items():
        if key.endswith("_epochs"):
            kwargs[key[: -len("_epochs")] + "_steps"] = int(round(value * steps_per_epoch))
        elif key in ("switch_start", "switch_end"):
            kwargs[key] = int(round(value * steps_per_epoch)) if step_unit else _whole(key, value)
        else:
            kwargs[key] = value
    return kwargs


def build_averager(method_cfg: Any, module: nn.Module, steps_per_epoch: int) -> Optional[Any]:
    """The `sema` object for this method bound to `module`, or None for no averaging."""
    import sema

    averager = _as_dict(method_cfg).get("averager")
    if averager is None:
        return None
    if averager not in sema.METHODS:
        raise ValueError(f"method.averager={averager!r} is not allowed; choose one of: {', '.join(sema.METHODS)}")
    return sema.METHODS[averager](module, **averager_kwargs(method_cfg, steps_per_epoch))


def bn_update_batches(method_cfg: Any, averager: Optional[Any]) -> Optional[int]:
    """How many training batches the engine uses to re-estimate the average's BatchNorm statistics (None: no
    re-estimation). Only a method whose average keeps buffers of its own can hold re-estimated statistics:
    under buffers="ignore" the average reads the model's statistics, so the update would overwrite the model's."""
    batches = _as_dict(method_cfg).get("bn_update_batches")
    if batches is None or averager is None:
        return None
    if isinstance(batches, bool) or not isinstance(batches, int) or batches < 1:
        raise ValueError(f"method.bn_update_batches={batches!r} is not allowed; it must be an integer >= 1 or null")
    if getattr(averager, "buffers", None) == "ignore":
        raise ValueError("method.bn_update_batches needs method.buffers=average or copy: with buffers=ignore the "
                         "average has no BatchNorm statistics of its own (set bn_update_batches=null instead)")
    return batches
