"""The benchmark's methods: `baseline` (no averaging) plus every entry of `sema.METHODS`, built from their `Settings`.

A method config (`cfg.method`) is the method's own `Settings` dataclass (`sema.<Class>.Settings`, next to the
class; see `sema.settings`) plus two labels:

    name      the label in results and run directories (sema, sema_paper, ...)
    averager  the `sema.METHODS` key to build; null = no averaging (the baseline)

Nothing else is in it: SWA's config has no `switch_unit`, EMA's no `start_epochs`. Fields that depend on the
run's length (`decay`, `warmup_epochs`, `switch_start`, `tail_start`: SWA's start and BEMA's burn-in; marked with
`sema.settings.recipe_field`) default to the recipe's `averaging.<key>`; a value written in a method file or on the
command line replaces that default.

    averager, kwargs = build_averager(cfg.method, module, steps_per_epoch)
    # averager = sema.METHODS[cfg.method.averager](module, **kwargs), kwargs = Settings.kwargs(steps_per_epoch)

`kwargs` is exactly what the constructor received; the engine records it in result.json as `method_kwargs`.

Where the choices come from (`register`, called by `benchmarks.recipes.register_configs`):
* `schema/method/<key>`: the typed schema of each `sema.METHODS` entry (and `none` for the baseline);
* `method/<key>` and `method/baseline`: a ready config for every registered method without a file of its own;
* `configs/method/<name>.yaml`: variants and non-default settings (e.g. `sema_paper`: `defaults:
  [/schema/method/sema@_here_, _self_]`, then `name: sema_paper`, `preset: paper`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from torch import nn

from sema.settings import RECIPE_KEY

BASELINE = "baseline"  # the method without averaging: the trained model itself is evaluated and reported


@dataclasses.dataclass
class NoAveraging:
    """The baseline: no settings."""


def settings_class(averager: Optional[str]) -> type:
    """The Settings dataclass of a `sema.METHODS` key (NoAveraging for None); unknown keys list the allowed."""
    import sema

    if averager is None:
        return NoAveraging
    if averager not in sema.METHODS:
        raise ValueError(f"method.averager={averager!r} is not allowed; choose one of: {', '.join(sema.METHODS)} "
                         "(or null for no averaging)")
    return sema.METHODS[averager].Settings


def schema(averager: Optional[str], name: str) -> DictConfig:
    """The typed config node of a method: `name`, `averager`, then the Settings fields, recipe fields pointing at
    `${averaging.<key>}`."""
    settings = settings_class(averager)
    labelled = dataclasses.make_dataclass(
        f"{settings.__name__}Config",
        [("name", str, dataclasses.field(default=name)),
         ("averager", Optional[str], dataclasses.field(default=averager))],
        bases=(settings,))
    node = OmegaConf.structured(labelled)
    for f in dataclasses.fields(settings):
        if RECIPE_KEY in f.metadata:
            node[f.name] = "${averaging." + f.metadata[RECIPE_KEY] + "}"
    return node


def register(cs: Any, method_dir: Path) -> None:
    """Store the method schemas and the file-less method configs in Hydra's ConfigStore `cs`."""
    import sema

    own_files = {p.stem for p in method_dir.glob("*.yaml")}
    cs.store(group="schema/method", name="none", node=schema(None, BASELINE))
    if BASELINE not in own_files:
        cs.store(group="method", name=BASELINE, node=schema(None, BASELINE))
    for key in sema.METHODS:
        cs.store(group="schema/method", name=key, node=schema(key, key))
        if key not in own_files:
            cs.store(group="method", name=key, node=schema(key, key))


def choices(method_dir: Path) -> dict[str, str]:
    """Every `method=<name>` choice -> a one-line description (the method class's, or the method file's header)."""
    import sys

    import sema

    out = {BASELINE: "no averaging: the trained model itself"}
    for key, cls in sema.METHODS.items():
        out[key] = (sys.modules[cls.__module__].__doc__ or cls.__name__).strip().splitlines()[0]
    for path in sorted(method_dir.glob("*.yaml")):
        header = [line[1:].strip() for line in path.read_text().splitlines() if line.startswith("#")]
        out[path.stem] = header[0] if header else path.stem
    return out


def _parse(method_cfg: Any) -> tuple[Optional[str], Any]:
    """(the sema.METHODS key or None, the method's Settings object) from its config node or a plain dict."""
    values = OmegaConf.to_container(method_cfg, resolve=True) if isinstance(method_cfg, DictConfig) else dict(method_cfg)
    averager = values.pop("averager", None)
    values.pop("name", None)
    cls = settings_class(averager)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"method.{unknown[0]} is not a setting of averager={averager!r} (unknown: {unknown}); "
                         f"its settings: {', '.join(sorted(known)) or 'none'}")
    return averager, cls(**values)


def settings_of(method_cfg: Any) -> Any:
    """The method's Settings object from its config node (labels dropped; unknown fields are an error)."""
    return _parse(method_cfg)[1]


def method_kwargs(method_cfg: Any, steps_per_epoch: int) -> Optional[dict[str, Any]]:
    """The constructor's keyword arguments for this method and run length; None for the baseline."""
    settings = settings_of(method_cfg)
    return None if isinstance(settings, NoAveraging) else settings.kwargs(steps_per_epoch)


def build_averager(method_cfg: Any, module: nn.Module, steps_per_epoch: int) -> tuple[Optional[Any], Optional[dict]]:
    """(the `sema` object bound to `module`, the keyword arguments it was built with); (None, None) = baseline."""
    import sema

    averager, settings = _parse(method_cfg)
    if averager is None:
        return None, None
    kwargs = settings.kwargs(steps_per_epoch)
    return sema.METHODS[averager](module, **kwargs), kwargs


def check_method(method_cfg: Any) -> None:
    """Fail early, before any data is loaded: build the method once on a one-layer model (choices, ranges and
    combinations are checked by the method itself, with its own message)."""
    import torch

    probe = nn.Sequential(nn.Linear(1, 1), nn.BatchNorm1d(1))
    try:
        with torch.no_grad():
            build_averager(method_cfg, probe, steps_per_epoch=1)
    except (TypeError, ValueError) as err:  # sema names the argument first: prefix the config node
        message = str(err)
        raise ValueError(message if message.startswith("method.") else f"method.{message}") from err
