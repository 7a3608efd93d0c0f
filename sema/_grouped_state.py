"""Per-tensor state beyond the average itself (BEMA's EMA and snapshot, LAWA's ring of snapshots), kept aligned
with a `TensorPlan`'s groups so the hot path is one foreach call per group.

A `TensorPlan` rebuilds its groups when the model is moved or cast (`plan.version` grows). Lists made with
`plan.alloc_like()` before that no longer line up with the groups, so `GroupedState.lists()` re-aligns them by
canonical tensor name (and moves them next to the new average) the first time it is asked after a rebuild.
Checkpoints store the state by canonical name, like the average: `{name: tensor}`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sema import sharding
from sema._binding import TensorPlan, check_finite, tensor_section


def sync_plan(plan: TensorPlan) -> None:
    """Rebuild `plan` now if the model was moved or cast since planning (one tensor per group is compared), so
    that lists taken from a `GroupedState` afterwards line up with `plan.groups` for the whole call."""
    if plan._moved():
        plan.check()


class GroupedState:
    """One tensor per tracked tensor of `plan`, shaped, placed and typed like the average's.

    Args:
        plan: the method's plan.
        fill: "zeros", "average" (a copy of the average) or "model" (a copy of the model's tensors).
    """

    def __init__(self, plan: TensorPlan, fill: str = "zeros") -> None:
        self.plan = plan
        self._tensors = plan.alloc_like(fill)
        self._names = [list(g.names) for g in plan.groups]
        self._version = plan.version

    def lists(self) -> list[list[Tensor]]:
        """The tensors, one list per `plan.groups` entry (re-aligned first if the plan was rebuilt)."""
        if self._version != self.plan.version:
            old = self.by_name()
            self._tensors = self.plan.alloc_like("zeros")
            self._names = [list(g.names) for g in self.plan.groups]
            self._version = self.plan.version
            with torch.no_grad():
                for names, tensors in zip(self._names, self._tensors):
                    for name, t in zip(names, tensors):
                        t.copy_(old[name])
        return self._tensors

    def by_name(self) -> dict[str, Tensor]:
        """{canonical name: tensor} (references)."""
        return {n: t for names, ts in zip(self._names, self._tensors) for n, t in zip(names, ts)}

    def _likes(self) -> dict[str, Tensor]:
        """canonical name -> the average's DTensor (sharded models; empty otherwise)."""
        return {n: like for g in self.plan.groups for n, like in zip(g.names, g.sharded_like) if like is not None}

    def state(self) -> dict[str, Tensor]:
        """For a checkpoint: {canonical name: tensor} (references; the caller saves or clones them). A sharded
        model's state is DTensors over the local shards, as the average's (torch.distributed.checkpoint)."""
        self.lists()
        likes = self._likes()
        return {n: sharding.as_global(t.detach(), likes[n]) if n in likes else t.detach()
                for n, t in self.by_name().items()}

    def validate(self, state: dict[str, Tensor], what: str) -> dict[str, Tensor]:
        """A `state()` checked against the bound model, by canonical name, ready for `assign`: ValueError listing
        every missing, unexpected or reshaped name, and naming every averaged tensor holding NaN or inf. Validate
        every section of a checkpoint before assigning any, so that a refused state changes nothing."""
        state = tensor_section(state, what)
        mine = self.state()  # shapes as saved: global shapes for a sharded model
        missing = [k for k in mine if k not in state]
        unexpected = [k for k in state if k not in mine]
        reshaped = [f"{k}: expected {tuple(mine[k].shape)}, got {tuple(state[k].shape)}"
                    for k in mine if k in state and tuple(state[k].shape) != tuple(mine[k].shape)]
        if missing or unexpected or reshaped:
            raise ValueError(
                f"{what} does not match the bound model: missing {missing or 'none'}, unexpected "
                f"{unexpected or 'none'}, reshaped {reshaped or 'none'}"
            )
        check_finite(state, self.plan.lerp_names, what)
        return state

    def assign(self, state: dict[str, Tensor]) -> None:
        """Copy a `validate()`d state in."""
        with torch.no_grad():
            for k, t in self.state().items():
                sharding.assign(t, state[k])  # into the local tensor (t aliases it); full tensors sliced

    def load(self, state: dict[str, Tensor], what: str) -> None:
        """Copy a `state()` back in (`validate`, then `assign`)."""
        self.assign(self.validate(state, what))
