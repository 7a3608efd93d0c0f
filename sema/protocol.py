"""The plug-in point for weight-averaging (WA) methods.

Every method in `sema` (and any method a user writes) satisfies `WeightAverager`. The benchmark engine
talks to methods only through this protocol, so a new method is one file plus one line in
`sema/__init__.py::METHODS`. This is a structural Protocol, not a base class: do not inherit from it.

Optional hooks, each its own Protocol below: `PreparesForEval` (work on the average before it is evaluated,
e.g. SWA's BatchNorm re-estimation) and `WrapsOptimizer` (methods acting on the optimizer, e.g. Lookahead).
A method registered in `METHODS` also carries `Settings`, its settings in epochs (`sema.settings`).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

from torch import nn


@runtime_checkable
class WeightAverager(Protocol):
    """What the training loop needs from a weight-averaging method.

    Call order in a training loop::

        avg = Method(model, ...)          # binds to `model`; may allocate the averaged copy
        for epoch in ...:
            for batch in ...:
                loss.backward(); optimizer.step()
                avg.update()              # after every optimizer step; must not synchronise with the device
            avg.epoch_end()               # once per epoch; True if the method wrote into the model just now
            with avg.swapped():           # evaluate the weights the method stands for
                evaluate(model)
    """

    @property
    def average(self) -> nn.Module:
        """A module of the bound model's architecture that holds the weights to evaluate, save or export."""
        ...

    def update(self) -> None:
        """Fold the bound model's current weights into the average (call after `optimizer.step()`)."""
        ...

    def epoch_end(self) -> bool:
        """Mark the end of an epoch; returns True when the method just changed the bound model's weights."""
        ...

    def copy_to(self, model: nn.Module | None = None) -> None:
        """Write the averaged weights into `model` (default: the bound model)."""
        ...

    def swapped(self) -> AbstractContextManager[nn.Module]:
        """Context manager: inside, the bound model holds the averaged weights; on exit its own, bit for bit."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: averaged tensors, counters, configuration, format version."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from `state_dict()`; raises ValueError naming every mismatch."""
        ...


# Optional hooks. A method implements one when it needs it; trainers check with isinstance(averager, <Protocol>)
# once, when they bind the method, and call the hook at the documented point. Like `WeightAverager`, these are
# structural: a method does not inherit from them.
@runtime_checkable
class PreparesForEval(Protocol):
    """A method whose average needs work before it is evaluated (AlgoPerf's `prepare_for_eval`), e.g. SWA's
    BatchNorm re-estimation. Trainers call it before every evaluation of the average (before `swapped()`)."""

    def prepare_for_eval(self, batches: Iterable[Any], forward: Callable[[Any], Any]) -> None:
        """`batches`: training batches in a fixed order; `forward(batch)`: the bound model's training forward pass
        on one batch (train mode, no autograd; the trainer keeps its random state untouched around the call)."""
        ...


@runtime_checkable
class WrapsOptimizer(Protocol):
    """A method that acts on the optimizer (Lookahead). Trainers call it once, right after building the optimizer,
    and train (and checkpoint) with what it returns."""

    def wrap_optimizer(self, optimizer: Any) -> Any:
        ...
