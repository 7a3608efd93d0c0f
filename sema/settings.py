"""Method settings in a training recipe's units: what `sema-bench` (or any trainer counting epochs) configures.

Each method class in `sema.METHODS` carries a `Settings` dataclass (`sema.EMA.Settings`, ...): that method's own
arguments, with lengths in epochs where the constructor counts optimizer steps, and `kwargs(steps_per_epoch)`,
the explicit conversion into the constructor's keyword arguments:

    settings = sema.SWA.Settings(start_epochs=6)
    kwargs = settings.kwargs(steps_per_epoch=391)        # {"start_steps": 2346, "update_every": 1, ...}
    avg = sema.SWA(model, **kwargs)

Conversion, for every `*_epochs` field that a `kwargs()` turns into a `*_steps` argument:

    steps = round(epochs * steps_per_epoch)

Fields marked with `recipe_field("<key>")` take their default from the training recipe (the benchmark's
`averaging.<key>`: the decay, the decay warm-up length, SEMA's first switch and the start of the tail that SWA
averages and BEMA snapshots, which depend on the run's length);
in plain Python their default is None (the method's own default applies).
"""

from __future__ import annotations

import math
from dataclasses import field
from typing import Any

RECIPE_KEY = "recipe"  # the dataclass-field metadata key naming the recipe's averaging setting a field defaults to


def recipe_field(key: str) -> Any:
    """A settings field whose default is the training recipe's `averaging.<key>` (None outside a recipe)."""
    return field(default=None, metadata={RECIPE_KEY: key})


def epochs_to_steps(name: str, epochs: float | None, steps_per_epoch: int) -> int | None:
    """round(epochs * steps_per_epoch); None stays None. `name` is the field, for the error message."""
    if epochs is None:
        return None
    if isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or not math.isfinite(epochs) or epochs < 0:
        raise ValueError(f"{name}={epochs!r} is not allowed; it must be a finite number of epochs >= 0")
    return int(round(epochs * steps_per_epoch))


def whole_epochs(name: str, epochs: float | None) -> int | None:
    """`epochs` as an int, refusing fractions (a cadence counted in epochs); None stays None."""
    if epochs is None:
        return None
    if float(epochs) != int(epochs):
        raise ValueError(f"{name}={epochs!r} must be a whole number of epochs with switch_unit='epoch' "
                         "(or set switch_unit='step' to count in steps)")
    return int(epochs)
