"""Sharded models (FSDP2 `fully_shard`, or any model whose parameters are DTensors): shard-local averages.

Under FSDP2 every rank holds one shard of each parameter (a DTensor whose local tensor is that rank's rows). An
average needs no communication at all: each rank averages its own shard,

    avg_local <- avg_local + w * (param_local - avg_local)          (per rank; no gather, no all-reduce)

which is, shard by shard, exactly the average of the full weights. So `sema` binds to the *local* tensors: the
average is kept as DTensors with the parameters' mesh and placements (one float32 shard per rank, 1/world of a
full copy), the foreach kernels run on the local tensors as for any model, and a checkpoint of the average is a
state dict of DTensors that `torch.distributed.checkpoint` saves and reshards to another world size.

What this module provides (the binding in `sema._binding` uses it; users need only `full_state_dict`):

    is_sharded(t)                 # a DTensor?
    local(t)                      # its local tensor (t itself for a plain tensor)
    check_uniform(module)         # ValueError when some parameters are sharded and others are not
    skeleton_average(module, ...) # the average of a sharded model: a module tree holding only the tensors
    assign(dst, src)              # dst <- src for any mix of DTensor / plain (a full tensor is sliced locally)
    as_global(local, like)        # a DTensor over `local` with the mesh/placements/shape of `like`
    full_state_dict(module)       # {name: full tensor} (all-gathers shards; every rank must call it)
    fsdp_modules(module)          # the FSDP2 modules inside (their forwards are collectives)

An FSDP2 module cannot be deep-copied, and a copy would carry FSDP's hooks anyway, so the average of a sharded
model is a "skeleton": plain `nn.Module` nodes mirroring the model's module tree, with the averaged parameters
and buffers under the same names and no forward. Evaluate the average with `method.swapped()` (each rank swaps
its shards into the model; FSDP gathers them as usual), or export it with `full_state_dict`.
Buffers of an FSDP2 model are not sharded (every rank has its own copy); they are averaged locally.
"""

from __future__ import annotations

import sys
from typing import Optional

import torch
from torch import Tensor, nn


def _dtensor_type() -> Optional[type]:
    # No tensor can be a DTensor before torch.distributed.tensor was imported (it takes ~0.4 s): look, don't import.
    module = sys.modules.get("torch.distributed.tensor")
    return getattr(module, "DTensor", None)


def is_sharded(t: Tensor) -> bool:
    """The tensor is a DTensor (an FSDP2 / tensor-parallel parameter)."""
    dtensor = _dtensor_type()
    return dtensor is not None and isinstance(t, dtensor)


def local(t: Tensor) -> Tensor:
    """The rank's local tensor of a DTensor (the storage FSDP2 all-gathers from and the optimizer updates in
    place); a plain tensor itself."""
    return t._local_tensor if is_sharded(t) else t


def spec(t: Tensor) -> Optional[tuple]:
    """(mesh, placements, global shape) of a DTensor; None for a plain tensor."""
    return (t.device_mesh, tuple(t.placements), tuple(t.shape)) if is_sharded(t) else None


def check_uniform(module: nn.Module) -> bool:
    """True when every parameter of `module` is sharded, False when none is; ValueError for a mix (e.g. the root
    module was not passed to fully_shard: its own parameters stay plain tensors)."""
    params = list(module.named_parameters())
    sharded = [n for n, p in params if is_sharded(p)]
    if sharded and len(sharded) != len(params):
        plain = [n for n, p in params if not is_sharded(p)]
        raise ValueError(
            f"the model mixes sharded (DTensor) and plain parameters: plain {plain[:8]}"
            f"{' ...' if len(plain) > 8 else ''}; shard all of them (apply fully_shard to the root module too, "
            "after its submodules) or none, then bind the average"
        )
    return bool(sharded)


def skeleton_average(module: nn.Module, dtype_for, device: Optional[torch.device] = None) -> nn.Module:
    """The average of a sharded `module`: nn.Module nodes named like its submodules, holding a copy of each
    parameter (DTensor, cast with `dtype_for(tensor)`, shard-local) and buffer, tied tensors kept tied."""
    if device is not None:
        raise ValueError("device= (an average kept elsewhere) is not supported for a sharded (FSDP2) model: "
                         "the average's shards live next to the parameters' shards; leave device=None")
    root = nn.Module()
    nodes = {"": root}
    for name, _ in module.named_modules():
        if name:
            parent, _, leaf = name.rpartition(".")
            nodes[name] = nn.Module()
            nodes[parent].add_module(leaf, nodes[name])
    made: dict[int, Tensor] = {}
    with torch.no_grad():
        for owner_name, owner in module.named_modules(remove_duplicate=False):
            node = nodes.get(owner_name)
            if node is None:
                continue
            for leaf, p in owner._parameters.items():
                if p is not None:
                    if id(p) not in made:
                        made[id(p)] = nn.Parameter(p.detach().to(dtype_for(p), copy=True), requires_grad=False)
                    node.register_parameter(leaf, made[id(p)])
            for leaf, b in owner._buffers.items():
                if b is not None:
                    if id(b) not in made:
                        made[id(b)] = b.detach().to(dtype_for(b), copy=True)
                    node.register_buffer(leaf, made[id(b)], persistent=leaf not in owner._non_persistent_buffers_set)
    return root.eval()


def assign(dst: Tensor, src: Tensor) -> None:
    """dst <- src in place. A DTensor `dst` takes a DTensor `src` of the same placements shard by shard (other
    placements are redistributed), and a plain full tensor by slicing out its own shard (no communication)."""
    if is_sharded(dst):
        if is_sharded(src):
            if tuple(src.placements) != tuple(dst.placements) or src.device_mesh != dst.device_mesh:
                src = src.redistribute(dst.device_mesh, dst.placements)
        else:
            from torch.distributed.tensor import distribute_tensor

            src = distribute_tensor(src.to(dst.device), dst.device_mesh, dst.placements, src_data_rank=None)
        local(dst).copy_(local(src))
    else:
        dst.copy_(src.full_tensor() if is_sharded(src) else src)


def as_global(t: Tensor, like: Tensor) -> Tensor:
    """A DTensor over the local tensor `t` (no copy) with the mesh, placements, shape and stride of the DTensor
    `like`; `t` itself when `like` is a plain tensor."""
    if not is_sharded(like):
        return t
    from torch.distributed.tensor import DTensor

    return DTensor.from_local(t, like.device_mesh, like.placements, shape=like.shape, stride=like.stride())


def fsdp_modules(module: nn.Module) -> list[nn.Module]:
    """The FSDP2 modules inside `module` (empty for any other model)."""
    if "torch.distributed.fsdp" not in sys.modules:  # nothing can be an FSDP module before it was imported
        return []
    from torch.distributed.fsdp import FSDPModule

    return [m for m in module.modules() if isinstance(m, FSDPModule)]


def full_state_dict(module: nn.Module, rank0_only: bool = False) -> dict[str, Tensor]:
    """{name: full tensor} of `module`'s state dict (e.g. `ema.average`), DTensors all-gathered. Every rank must
    call it (it is a collective for sharded tensors); with `rank0_only` the other ranks get {}."""
    out = {k: (v.full_tensor() if is_sharded(v) else v.detach()) for k, v in module.state_dict().items()}
    if rank0_only and torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return {}
    return out
