"""Bind a model once: resolve its tensors, pair them with the average's, group them for fast foreach kernels.

This is the engine under every method in `sema` (EMA, SEMA, SWA, and the comparison methods). A method creates
its averaged copy with `make_average()` and a `TensorPlan` over (model, average), then calls the plan's
primitives. Stable API (other method files rely on it):

    average = make_average(module, average_dtype=None, device=None)   # one float32 copy (bf16/fp16 promoted)
    plan = TensorPlan(model, average, buffers="average", follow_device=True)
    plan.lerp_(weight)              # average <- average + weight * (model - average)  (one foreach per group)
    plan.lerp_(weight, targets)     # same, into another tensor set shaped like the average (plan.alloc_like())
    plan.copy_from_model(targets=None)          # average (or targets) <- model
    plan.copy_into_model(source=None, blend=1)  # model <- model + blend * (average - model); blend=1 is a copy
    with plan.swapped(): ...        # model holds the average inside; its own weights again on exit, bit for bit
    plan.alloc_like(fill="zeros"|"average"|"model")  # per-group lists shaped like the average (for extra state)
    plan.average_module(); plan.copy_to(module); plan.average_state(); plan.load_average_state(sd)
    plan.check()                    # full re-validation (names, shapes, identity); call off the hot path
    plan.groups, plan.version       # TensorGroup list; version grows whenever the plan was rebuilt

How the tensors are grouped. Each (model tensor, average tensor) pair is put in one `TensorGroup` keyed by
(kind, model device, model dtype, average device, average dtype). `kind` is "lerp" for averaged tensors
(floating-point parameters, and floating-point buffers under `buffers="average"`) and "copy" for tensors taken
over as they are (integer buffers, or all buffers under `buffers="copy"`). `buffers="ignore"` leaves buffers out.

Why this is fast. The lists are built once, here, by object identity on the *unwrapped* module (DDP `.module` and
`torch.compile`'s `_orig_mod` are removed, so no name prefix can break the pairing). `lerp_` is one
`torch._foreach_lerp_` per group with a Python-float weight: no host-device synchronisation, no state_dict, no
Python loop over tensors. A group whose model and average tensors differ in dtype or device (a bf16 model with a
float32 average, or an average kept on the CPU) is "staged": `_foreach_lerp_` needs one dtype, so the model
tensors are cast into a preallocated scratch buffer with one `_foreach_copy_` (a fused multi-tensor cast kernel on
CUDA) and then lerped, chunk by chunk: the scratch holds one chunk (64 MiB of float32 on GPUs, 1 MiB on the CPU,
or the largest single tensor), never a whole-model temporary. That is 18 bytes per parameter instead of the
10-byte bound of a fused
mixed-dtype kernel, which PyTorch does not offer (`_foreach_lerp_` rejects mixed dtypes; a foreach add of mixed
dtypes falls back to one kernel per tensor on CUDA).

Robustness. The model's parameters are held as the Parameter objects themselves, so `model.to(device)` (which
replaces `param.data` in place) is seen at once; `lerp_` compares one tensor per group with the device/dtype it
was planned for and rebuilds the plan when the model moved (the average follows when `follow_device=True`).
`check()` (run by the methods at epoch ends, swaps, copies, reads of the average and checkpoints) compares
identities, names and shapes; it rebuilds silently when only identities changed and raises a ValueError listing the
parameters that were added, removed or reshaped otherwise (a reshaped one with its bound and its new shape: an
average cannot follow a reshaped model, so the message says to build a new averager). A kernel of the hot path that
fails (a tensor reshaped in place, `param.data = ...`, between two checks) runs the same check, so the error names
the parameter rather than a tensor size.

Loading. `load_average_state` (and `GroupedState.load`) refuse, before writing anything, a state whose names or
shapes differ and one whose averaged tensors hold NaN or inf (a diverged average), naming each tensor.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from sema import sharding

# The largest number of elements staged through scratch at once. On accelerators, 2**24 (64 MiB in float32): each
# foreach launch then moves tens of MB, so launch cost is negligible, and the scratch stays small next to the model.
# On the CPU, 2**18 (1 MiB): the cast chunk is still in cache when lerp reads it, which measured 1.7x faster than
# 64 MiB chunks on ResNet-18 (bf16 model, float32 average, one thread: 16.5 ms vs 28.7 ms per update).
CHUNK_NUMEL = 1 << 24
CPU_CHUNK_NUMEL = 1 << 18

BUFFER_POLICIES = ("average", "copy", "ignore")


def unwrap(model: nn.Module) -> nn.Module:
    """The module that owns the tensors: strips DistributedDataParallel/DataParallel `.module` and compiled
    `_orig_mod` wrappers, in any nesting order."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model


def canonical_name(name: str) -> str:
    """A tensor name without wrapper prefixes: leading `module.` (DDP) and `_orig_mod.` (torch.compile) anywhere."""
    while name.startswith(("module.", "_orig_mod.")):
        name = name.split(".", 1)[1]
    return name.replace("._orig_mod.", ".")


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """Accept a torch.dtype or its name ("float32", "torch.bfloat16"); None stays None."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).removeprefix("torch.")
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ValueError(
            f"average_dtype={dtype!r} is not a floating-point torch dtype; allowed: None (float32, float64 kept), "
            "'float32', 'float64', 'bfloat16', 'float16' or a torch.dtype"
        )
    return value


def average_dtype_for(tensor: Tensor, average_dtype: torch.dtype | None) -> torch.dtype:
    """The dtype a tensor's average is kept in: integer tensors keep theirs; floating ones take `average_dtype`,
    or by default float32 (float64 stays float64) so that small updates of a bf16/fp16 model are not rounded away."""
    if not tensor.is_floating_point():
        return tensor.dtype
    if average_dtype is not None:
        return average_dtype
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


def make_average(
    module: nn.Module, average_dtype: torch.dtype | str | None = None, device: torch.device | str | None = None
) -> nn.Module:
    """A copy of `module` (unwrapped) whose tensors are cast to the average dtype and placed on `device` (None:
    each tensor's own device). Each tensor is cast straight from the model's, so the peak memory is the average
    itself (one float32 copy), never a model-dtype copy first. Parameters do not require grad; eval mode."""
    module = unwrap(module)
    dtype = resolve_dtype(average_dtype)
    for m in sharding.fsdp_modules(module):  # the shards, not parameters gathered by a forward without backward
        m.reshard()
    if sharding.check_uniform(module):  # FSDP2: shard-local average, a skeleton module (sema/sharding.py)
        return sharding.skeleton_average(module, lambda t: average_dtype_for(t, dtype),
                                         None if device is None else torch.device(device))
    memo: dict[int, object] = {}
    with torch.no_grad():
        for p in module.parameters():
            if id(p) not in memo:
                t = p.detach().to(device=device or p.device, dtype=average_dtype_for(p, dtype), copy=True)
                memo[id(p)] = nn.Parameter(t, requires_grad=False)
        for b in module.buffers():
            if id(b) not in memo:
                memo[id(b)] = b.detach().to(device=device or b.device, dtype=average_dtype_for(b, dtype), copy=True)
        average = copy.deepcopy(module, memo)
    average.requires_grad_(False)
    return average.eval()


@dataclass
class TensorGroup:
    """Tensors of one (kind, model device/dtype, average device/dtype): the unit of one foreach call."""

    kind: str  # "lerp": averaged; "copy": taken over as is (integer buffers, or buffers under "copy")
    names: list[str]  # canonical names, aligned with `model` and `average`
    model: list[Tensor]  # the live model tensors (Parameter objects and buffers), written by switch/swap
    average: list[Tensor]  # the average module's tensors
    model_device: torch.device
    model_dtype: torch.dtype
    average_device: torch.device
    average_dtype: torch.dtype
    chunks: list[slice] = field(default_factory=list)  # staged groups: index ranges of <= CHUNK_NUMEL elements
    sharded_like: list = field(default_factory=list)  # sharded models: the average's DTensors, aligned with
    #                                                    `average` (which then holds their local shards)

    @property
    def staged(self) -> bool:
        """True when model and average differ in dtype or device (kernels go through scratch)."""
        return self.model_dtype != self.average_dtype or self.model_device != self.average_device

    @property
    def numel(self) -> int:
        return sum(t.numel() for t in self.average)


def _chunk(tensors: list[Tensor], limit: int) -> list[slice]:
    """Consecutive index ranges whose element count stays <= limit (a larger tensor gets a range of its own)."""
    out, start, size = [], 0, 0
    for i, t in enumerate(tensors):
        if size and size + t.numel() > limit:
            out.append(slice(start, i))
            start, size = i, 0
        size += t.numel()
    if start < len(tensors):
        out.append(slice(start, len(tensors)))
    return out


def _set_tensor(module: nn.Module, name: str, value: Tensor) -> None:
    """Replace the buffer `name` (dotted) of `module` by `value`."""
    owner_name, _, leaf = name.rpartition(".")
    owner = module.get_submodule(owner_name) if owner_name else module
    owner._buffers[leaf] = value


class TensorPlan:
    """Pairs the tensors of `model` (any wrapper) with those of `average` and groups them for foreach kernels.

    Args:
        model: the trained model, possibly wrapped in DDP or compiled; its unwrapped module is what is bound.
        average: a module of the same architecture (from `make_average`) that holds the averaged tensors.
        buffers: "average" (floating buffers averaged, integer ones copied), "copy" (all copied), "ignore".
        follow_device: when the model is moved (`model.to(...)`), move the average with it. False keeps the
            average where it is (e.g. `device="cpu"` offload).
        chunk_numel: staged groups go through scratch at most this many elements at a time (None: CHUNK_NUMEL on
            accelerators, CPU_CHUNK_NUMEL on the CPU).
    """

    def __init__(
        self,
        model: nn.Module,
        average: nn.Module,
        buffers: str = "average",
        follow_device: bool = True,
        chunk_numel: int | None = None,
    ) -> None:
        if buffers not in BUFFER_POLICIES:
            raise ValueError(f"buffers={buffers!r} is not a buffer policy; allowed: {', '.join(BUFFER_POLICIES)}")
        self.model = model
        self.module = unwrap(model)
        self.average = average
        self.buffers = buffers
        self.follow_device = follow_device
        self.chunk_numel = chunk_numel
        self.version = 0  # grows on every rebuild: state allocated with alloc_like() must then be re-allocated
        self.is_swapped = False
        if not any(True for _ in self.module.parameters()):
            raise ValueError(
                f"model={type(self.module).__name__} has no parameters; a weight average needs at least one"
            )
        self._fsdp = sharding.fsdp_modules(self.module)
        for m in self._fsdp:  # a forward without backward leaves FSDP2's gathered parameters registered
            m.reshard()
        self.sharded = sharding.check_uniform(self.module)  # FSDP2: the plan works on the local shards
        self._build()

    # ------------------------------------------------------------------ building
    def _entries(self) -> list[tuple[str, str, Tensor, Tensor]]:
        """(kind, name, model tensor, average tensor) for every tracked tensor, in state_dict order."""
        params = list(self.module.named_parameters())
        avg_params = dict(self.average.named_parameters())
        self._check_names([n for n, _ in params], avg_params, "parameters")
        out = [("lerp" if p.is_floating_point() else "copy", n, p, avg_params[n]) for n, p in params]
        if self.buffers != "ignore":
            bufs = [(n, b) for n, b in self.module.named_buffers()]
            avg_bufs = dict(self.average.named_buffers())
            self._check_names([n for n, _ in bufs], avg_bufs, "buffers")
            for n, b in bufs:
                kind = "lerp" if (self.buffers == "average" and b.is_floating_point()) else "copy"
                out.append((kind, n, b, avg_bufs[n]))
        return out

    def _check_names(self, names: list[str], average: dict[str, Tensor], what: str) -> None:
        added = [n for n in names if n not in average]
        removed = [n for n in average if n not in set(names)]
        if added or removed:
            raise ValueError(
                f"the model's {what} changed since the average was bound: "
                f"added {added or 'none'}, removed {removed or 'none'}. Bind a new averager to the changed model."
            )

    def _build(self) -> None:
        entries = self._entries()
        self._check_sharding(entries)
        if self.follow_device and not self.sharded:
            self._move_average(entries)
            entries = self._entries()
        likes = {n: a for _, n, _, a in entries} if self.sharded else {}
        entries = [(k, n, sharding.local(m), sharding.local(a)) for k, n, m, a in entries]  # shards from here on
        reshaped = [f"{n}: bound {tuple(a.shape)}, now {tuple(m.shape)}"
                    for _, n, m, a in entries if m.shape != a.shape]
        if reshaped:
            raise ValueError(
                f"the model's tensors changed shape since the average was bound: {'; '.join(reshaped)}. An averager "
                "cannot follow a reshaped model: build a new one on the changed model (bind once, after the model "
                "is in its final shape)."
            )
        groups: dict[tuple, TensorGroup] = {}
        for kind, name, m, a in entries:
            key = (kind, m.device, m.dtype, a.device, a.dtype)
            if key not in groups:
                groups[key] = TensorGroup(kind, [], [], [], m.device, m.dtype, a.device, a.dtype)
            g = groups[key]
            g.names.append(name)
            g.model.append(m)
            g.average.append(a)
            g.sharded_like.append(likes.get(name))
        self.groups = list(groups.values())
        for g in self.groups:
            g.chunks = _chunk(g.model, self._limit(g.average_device)) if g.staged else [slice(0, len(g.model))]
        self.names = [n for g in self.groups for n in g.names]
        self.lerp_names = frozenset(n for g in self.groups if g.kind == "lerp" for n in g.names)  # averaged tensors
        self._sentinels = [(g.model[0], g.model_device, g.model_dtype) for g in self.groups]
        # One registered tensor per group, by its owner: catches the model's tensors being replaced (fully_shard
        # after binding, or FSDP2 re-padding a shard) at the next update, not only at the next check().
        owners = self._owners()
        self._registered = [owners[g.names[0]] + (self._registered_tensor(*owners[g.names[0]]),) for g in self.groups]
        self._identity = self._fingerprint()
        self._scratch: dict[tuple[torch.device, torch.dtype], Tensor] = {}
        self._views: dict[tuple, list[Tensor]] = {}
        self.version += 1

    def _owners(self) -> dict[str, tuple[dict, str]]:
        """canonical name -> (the owner module's _parameters or _buffers dict, leaf name)."""
        out: dict[str, tuple[dict, str]] = {}
        for prefix, owner in self.module.named_modules(remove_duplicate=False):
            for table in (owner._parameters, owner._buffers):
                for leaf, t in table.items():
                    if t is not None:
                        out.setdefault(f"{prefix}.{leaf}" if prefix else leaf, (table, leaf))
        return out

    @staticmethod
    def _registered_tensor(table: dict, leaf: str) -> Tensor:
        """What the plan reads for this registered tensor: its local shard when sharded."""
        return sharding.local(table[leaf])

    def _check_sharding(self, entries: list[tuple[str, str, Tensor, Tensor]]) -> None:
        """Model and average must be sharded alike, tensor by tensor (ValueError naming what differs)."""
        now = sharding.check_uniform(self.module)
        if not now and not self.sharded and not any(sharding.is_sharded(a) for _, _, _, a in entries):
            return
        if now != self.sharded or any(sharding.is_sharded(m) != sharding.is_sharded(a) for _, _, m, a in entries):
            raise ValueError(
                "the model's sharding changed since the average was bound (e.g. fully_shard applied after binding): "
                "bind the averager after the model is sharded (FSDP2: after fully_shard on every module and the root)"
            )
        changed = [n for _, n, m, a in entries if sharding.spec(m) != sharding.spec(a)]
        if changed:
            raise ValueError(
                f"the model's sharding (mesh or placements) changed since the average was bound for {changed[:8]}; "
                "bind a new averager to the re-sharded model (to move a checkpoint between world sizes, load its "
                "state_dict through torch.distributed.checkpoint)"
            )

    def _limit(self, device: torch.device) -> int:
        if self.chunk_numel is not None:
            return self.chunk_numel
        return CPU_CHUNK_NUMEL if device.type == "cpu" else CHUNK_NUMEL

    def _move_average(self, entries: list[tuple[str, str, Tensor, Tensor]]) -> None:
        """Put each average tensor on its model tensor's device (after `model.to(device)`)."""
        if all(a.device == m.device for _, _, m, a in entries):
            return
        devices = {m.device for _, _, m, _ in entries}
        if len(devices) == 1:  # the usual case: Module.to keeps tied weights tied and handles every device type
            self.average.to(next(iter(devices)))
            return
        with torch.no_grad():  # a model spread over several devices: move tensor by tensor
            for _, name, m, a in entries:
                if a.device != m.device:
                    if isinstance(a, nn.Parameter):
                        a.data = a.data.to(m.device)
                    else:
                        _set_tensor(self.average, name, a.to(m.device))

    def _fingerprint(self) -> tuple:
        return (
            tuple(id(p) for p in self.module.parameters()),
            tuple(p.shape for p in self.module.parameters()),  # `p.data = ...` reshapes keep the identity
            tuple(b.shape for b in self.module.buffers()) if self.buffers != "ignore" else (),
            tuple(id(sharding.local(p)) for p in self.module.parameters()) if self.sharded else (),
            tuple(id(b) for b in self.module.buffers()) if self.buffers != "ignore" else (),
            tuple(id(t) for t in self.average.parameters()),
            tuple(id(t) for t in self.average.buffers()) if self.buffers != "ignore" else (),
        )

    def check(self) -> None:
        """Full re-validation, O(number of tensors): rebuild if the model was moved or its tensors were replaced
        by same-named, same-shaped ones; ValueError if parameters were added, removed or reshaped. Cheap enough
        for epoch ends, swaps, copies and checkpoints; `lerp_` itself only does the per-group device check."""
        for m in self._fsdp:  # FSDP2 keeps a module's gathered parameters registered after a forward without
            m.reshard()       # backward (evaluation): put the shards back before looking at them
        if self._fingerprint() != self._identity or self._moved():
            self._build()

    def _moved(self) -> bool:
        """The model was moved or cast since planning (checks one tensor per group)."""
        for g in self.groups:
            m = g.model[0]
            if m.device != g.model_device or m.dtype != g.model_dtype:
                return True
            if self.follow_device and g.average[0].device != m.device:
                return True
        return False  # (lerp_ runs the model-side half of this through _sentinels, without the loop overhead)

    # ------------------------------------------------------------------ scratch
    def _scratch_views(self, tensors: list[Tensor], key: tuple, device: torch.device, dtype: torch.dtype) -> list[Tensor]:
        """Views into the shared scratch buffer of (device, dtype), shaped and strided like `tensors`; cached
        under `key` so the hot path builds nothing. The buffer grows to the largest chunk ever asked for."""
        views = self._views.get((key, device, dtype))
        if views is not None:
            return views
        total = sum(t.numel() for t in tensors)
        flat = self._scratch.get((device, dtype))
        if flat is None or flat.numel() < total:
            flat = torch.empty(total, device=device, dtype=dtype)
            self._scratch[(device, dtype)] = flat
            # Views into the old, smaller buffer stay valid but would keep it alive: drop them.
            self._views = {k: v for k, v in self._views.items() if k[1:] != (device, dtype)}
        views, offset = [], 0
        for t in tensors:
            piece = flat[offset : offset + t.numel()]
            # Same strides as the model tensor (e.g. channels_last) keep CUDA's foreach copy on its fused path.
            dense_strided = not t.is_contiguous() and _dense(t)
            views.append(piece.as_strided(t.shape, t.stride()) if dense_strided else piece.view(t.shape))
            offset += t.numel()
        self._views[(key, device, dtype)] = views
        return views

    def release_scratch(self) -> None:
        """Free the scratch buffers (they are re-allocated on next use)."""
        self._scratch.clear()
        self._views.clear()

    def scratch_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._scratch.values())

    # ------------------------------------------------------------------ hot path
    def lerp_(self, weight: float, targets: list[list[Tensor]] | None = None) -> None:
        """targets <- targets + weight * (model - targets) for "lerp" groups; targets <- model for "copy" groups.

        `targets` defaults to the average's tensors; otherwise it is a list aligned with `plan.groups` (from
        `alloc_like`). `weight` is a Python float (1 - decay for an EMA): no device synchronisation."""
        if self.is_swapped:
            raise RuntimeError("cannot update the average inside swapped(): the model holds the average there")
        for t, device, dtype in self._sentinels:  # one tensor per group: catches model.to(...) after binding
            if t.dtype is not dtype or t.device != device:
                self.check()
                break
        else:  # and tensors replaced in the module (fully_shard after binding; FSDP2 re-padding a shard)
            for table, leaf, t in self._registered:  # buffers (and FSDP's gathered root) are plain tensors
                now = table[leaf]
                if (getattr(now, "_local_tensor", now) if self.sharded else now) is not t:
                    self.check()
                    break
        # torch.no_grad() costs ~2 us per entry on CPU, as much as a small model's whole update: toggle directly.
        grad_was_enabled = torch.is_grad_enabled()
        torch._C._set_grad_enabled(False)
        try:
            for gi, g in enumerate(self.groups):
                dst = g.average if targets is None else targets[gi]
                if g.kind == "copy":
                    torch._foreach_copy_(dst, g.model)
                elif not g.staged:
                    torch._foreach_lerp_(dst, g.model, weight)
                else:
                    for ci, sl in enumerate(g.chunks):
                        views = self._scratch_views(g.model[sl], (gi, ci), g.average_device, g.average_dtype)
                        torch._foreach_copy_(views, g.model[sl])
                        torch._foreach_lerp_(dst[sl] if len(g.chunks) > 1 else dst, views, weight)
        except RuntimeError:
            self.explain_failure()
            raise
        finally:
            torch._C._set_grad_enabled(grad_was_enabled)

    def explain_failure(self) -> None:
        """Called when a kernel over the plan's tensors raised: if the model changed since binding (a tensor
        reshaped in place, added or removed), raise the ValueError of `check()` that names it instead of the
        kernel's size error; otherwise return (the caller re-raises the original error)."""
        self.check()

    # ------------------------------------------------------------------ copies
    def copy_from_model(self, targets: list[list[Tensor]] | None = None) -> None:
        """targets (default: the average) <- the model's tensors, cast as needed."""
        try:
            with torch.no_grad():
                for gi, g in enumerate(self.groups):
                    torch._foreach_copy_(g.average if targets is None else targets[gi], g.model)
        except RuntimeError:
            self.explain_failure()
            raise

    def copy_into_model(self, source: list[list[Tensor]] | None = None, blend: float = 1.0) -> None:
        """model <- model + blend * (source - model) for "lerp" groups (blend=1: an exact copy, cast to the model
        dtype); "copy" groups are copied. `source` defaults to the average."""
        if self.is_swapped:
            raise RuntimeError("cannot write the average into the model inside swapped()")
        self.check()
        with _resharded(self._fsdp), torch.no_grad():
            for gi, g in enumerate(self.groups):
                src = g.average if source is None else source[gi]
                if blend == 1.0 or g.kind == "copy":
                    torch._foreach_copy_(g.model, src)
                elif not g.staged:
                    torch._foreach_lerp_(g.model, src, blend)
                else:
                    for ci, sl in enumerate(g.chunks):
                        views = self._scratch_views(g.model[sl], (gi, ci), g.model_device, g.model_dtype)
                        torch._foreach_copy_(views, src[sl])
                        torch._foreach_lerp_(g.model[sl], views, blend)

    def alloc_like(self, fill: str = "zeros", dtype: torch.dtype | None = None) -> list[list[Tensor]]:
        """Per-group tensor lists shaped like the average (same devices; dtype of the average unless given),
        filled with zeros, a copy of the average, or a copy of the model. Re-allocate when `version` changes."""
        if fill not in ("zeros", "average", "model"):
            raise ValueError(f"fill={fill!r}; allowed: zeros, average, model")
        out = []
        with torch.no_grad():
            for g in self.groups:
                ts = [torch.zeros_like(a, dtype=dtype or a.dtype) for a in g.average]
                if fill != "zeros":
                    torch._foreach_copy_(ts, g.average if fill == "average" else g.model)
                out.append(ts)
        return out

    # ------------------------------------------------------------------ swap
    @contextmanager
    def swapped(self) -> Iterator[nn.Module]:
        """Inside: the model holds the average (cast to its dtype); on exit, also on exception, its own tensors
        bit for bit. Groups of one dtype and device are swapped in place in chunks through a small scratch
        buffer (the average then holds the model's tensors until exit: no whole-model temporary). Staged groups
        (bf16 model, float32 average) keep a backup of the model's tensors in the model's dtype, because the
        float32 average cannot be stored in the bf16 model without loss. Treat the model as read-only inside:
        what is written to it there is exchanged back into the average for unstaged groups and dropped for
        staged ones."""
        if self.is_swapped:
            raise RuntimeError("swapped() is already active; it cannot be nested")
        self.check()
        with _resharded(self._fsdp):  # FSDP2 gathers the swapped-in shards at the next forward, not stale copies
            backups = self._swap_in()  # (check() above caught reshaped tensors: nothing is half swapped)
        self.is_swapped = True
        try:
            yield self.model
        finally:
            with _resharded(self._fsdp):
                self._swap_out(backups)
            self.is_swapped = False

    def _swap_in(self) -> dict[int, list[Tensor]]:
        backups: dict[int, list[Tensor]] = {}
        with torch.no_grad():
            for gi, g in enumerate(self.groups):
                if g.staged:
                    backups[gi] = [m.detach().clone() for m in g.model]
                    torch._foreach_copy_(g.model, g.average)
                else:
                    self._exchange(gi)
        return backups

    def _swap_out(self, backups: dict[int, list[Tensor]]) -> None:
        with torch.no_grad():
            for gi, g in enumerate(self.groups):
                if gi in backups:
                    torch._foreach_copy_(g.model, backups[gi])
                else:
                    self._exchange(gi)

    def _exchange(self, gi: int) -> None:
        """Exchange model and average contents of an unstaged group, chunk by chunk through scratch."""
        g = self.groups[gi]
        for ci, sl in enumerate(_chunk(g.model, self._limit(g.model_device))):
            views = self._scratch_views(g.model[sl], ("swap", gi, ci), g.model_device, g.model_dtype)
            torch._foreach_copy_(views, g.model[sl])
            torch._foreach_copy_(g.model[sl], g.average[sl])
            torch._foreach_copy_(g.average[sl], views)

    # ------------------------------------------------------------------ export, checkpoints
    def average_module(self) -> nn.Module:
        """The average as a module. Under buffers="ignore" the model's current buffers are copied in first (that
        policy evaluates the average with the model's own BN statistics)."""
        if self.is_swapped:
            raise RuntimeError("the average is not available inside swapped(): the bound model holds it there")
        self.check()
        if self.buffers == "ignore":
            with torch.no_grad():
                mine = dict(self.average.named_buffers())
                for name, b in self.module.named_buffers():
                    if name in mine and mine[name].shape == b.shape:
                        mine[name].copy_(b)
        return self.average

    def copy_to(self, target: nn.Module | None = None) -> None:
        """Write the average into `target` (default: the bound model, exactly as a switch does). Any module of the
        same architecture works (wrappers are unwrapped); buffers follow the policy ("ignore": not written)."""
        if target is None or unwrap(target) is self.module:
            self.copy_into_model()
            return
        if self.is_swapped:
            raise RuntimeError("cannot copy the average inside swapped()")
        target = unwrap(target)
        for m in sharding.fsdp_modules(target):  # write into its shards, not a gathered copy FSDP2 drops
            m.reshard()
        mine = dict(self.average.named_parameters())
        theirs = dict(target.named_parameters())
        if self.buffers != "ignore":
            mine.update(self.average.named_buffers())
            theirs.update(target.named_buffers())
        problems = _mismatches(theirs, mine, "in the target but not in the average:", "in the average but not in the target:")
        if problems:
            raise ValueError(f"cannot copy the average into {type(target).__name__}: {problems}")
        with torch.no_grad():
            for name, t in theirs.items():
                sharding.assign(t, mine[name])

    def average_state(self) -> dict[str, Tensor]:
        """The averaged tensors by canonical name (references, like Module.state_dict)."""
        if self.is_swapped:
            raise RuntimeError("cannot read the average inside swapped(): the bound model holds it there")
        return {k: v.detach() for k, v in self.average.state_dict().items()}

    def load_average_state(self, state: dict[str, Tensor]) -> None:
        """Copy saved averaged tensors in; names may carry `module.`/`_orig_mod.` prefixes. ValueError listing every
        missing, unexpected or reshaped name."""
        if self.is_swapped:
            raise RuntimeError("cannot load the average inside swapped()")
        state = tensor_section(state, "the saved average")
        mine = self.average.state_dict()
        problems = _mismatches(mine, state, "missing from the saved state:", "unexpected in the saved state:")
        if problems:
            raise ValueError(f"the saved average does not match the bound model: {problems}")
        check_finite(state, self.lerp_names, "the saved average")
        with torch.no_grad():
            for k, t in mine.items():
                sharding.assign(t, state[k])  # a sharded average takes saved shards or full tensors

    # ------------------------------------------------------------------ sizes
    def average_bytes(self) -> int:
        """Bytes held by the averaged tensors (the memory cost of the average)."""
        return sum(a.numel() * a.element_size() for g in self.groups for a in g.average)


def tensor_section(state: object, what: str) -> dict[str, Tensor]:
    """A saved {name: tensor} section with canonical names; ValueError (naming `what`) unless it is a dict of
    tensors."""
    if not isinstance(state, dict):
        raise ValueError(f"{what} must be a dict of tensors by name (from state_dict()), got {type(state).__name__}")
    bad = [k for k, v in state.items() if not isinstance(v, Tensor)]
    if bad:
        raise ValueError(f"{what} holds non-tensor values under {bad}: expected a tensor for every name")
    return {canonical_name(k): v for k, v in state.items()}


def check_finite(state: dict[str, Tensor], names: frozenset[str] | set[str], what: str) -> None:
    """ValueError naming every tensor of `state` among `names` (the averaged ones) that holds NaN or inf: a
    diverged average is refused rather than loaded. Copied tensors (integer buffers, `buffers="copy"`) are the
    model's own values and are not checked. A sharded tensor is checked on this rank's shard."""
    bad = []
    for name in sorted(names & state.keys()):
        t = sharding.local(state[name])
        if t.is_floating_point() or t.is_complex():
            finite = torch.isfinite(t)
            if not bool(finite.all()):
                nan = int(torch.isnan(t).sum())
                bad.append(f"{name} ({nan} NaN, {int((~finite).sum()) - nan} inf of {t.numel()} values)")
    if bad:
        raise ValueError(
            f"{what} holds non-finite values in {', '.join(bad)}: refusing to load a diverged average; load an "
            "earlier checkpoint (the averaged tensors must be finite)"
        )


@contextmanager
def _resharded(fsdp_modules: list[nn.Module]) -> Iterator[None]:
    """Around a write into a sharded model's shards: FSDP2 modules drop any gathered (unsharded) copy before and
    after, so the next forward gathers what was written."""
    for m in fsdp_modules:
        m.reshard()
    yield
    for m in fsdp_modules:
        m.reshard()


def _mismatches(
    expected: dict[str, Tensor], given: dict[str, Tensor], missing: str = "missing", unexpected: str = "unexpected"
) -> str:
    """'' when `given` has exactly the names and shapes of `expected`; otherwise what differs, all of it."""
    absent = [k for k in expected if k not in given]
    extra = [k for k in given if k not in expected]
    shapes = [
        f"{k}: expected {tuple(expected[k].shape)}, got {tuple(given[k].shape)}"
        for k in expected
        if k in given and tuple(expected[k].shape) != tuple(given[k].shape)
    ]
    parts = []
    if absent:
        parts.append(f"{missing} {absent}")
    if extra:
        parts.append(f"{unexpected} {extra}")
    if shapes:
        parts.append(f"shape mismatch [{'; '.join(shapes)}]")
    return ", ".join(parts)


def _dense(t: Tensor) -> bool:
    """The tensor covers its storage span exactly once (contiguous in some dimension order)."""
    if t.numel() == 0:
        return True
    span = 1 + sum((s - 1) * st for s, st in zip(t.shape, t.stride()))
    return span == t.numel() and all(st >= 0 for st in t.stride())
