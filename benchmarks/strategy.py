"""How the model is spread over the processes of a torchrun job (`trainer.strategy`), and what that means for
checkpoints and exported weights.

* `ddp` (the default): every rank holds the whole model; DistributedDataParallel all-reduces the gradients.
  Checkpoints are one file written by rank 0 (benchmarks/checkpoint.py).
* `fsdp2`: `torch.distributed.fsdp.fully_shard` on each of the task's blocks (`TaskSetup.shard_blocks`), then on
  the whole model: parameters, gradients and optimizer state are sharded over the ranks, and so is the average
  (`sema` binds to the local shards, sema/sharding.py). `trainer.fsdp_param_dtype=bf16` gathers parameters and
  computes in bf16 while gradients are reduced in float32 (FSDP2's MixedPrecisionPolicy). Checkpoints are
  `torch.distributed.checkpoint` (DCP) directories, one file per rank plus metadata, which load at any world
  size: a run saved at 4 ranks resumes at 2.

A DCP checkpoint holds the tensors whose layout depends on the world size (model, optimizer, average); the rest of
the trainer's state (epoch, history, every rank's RNG) is `trainer.pt` beside them, written by rank 0.
DCP checkpoints are written atomically: into `<name>.tmp/`, then, once every rank has written, renamed over
`<name>/` (the previous one is moved to `<name>.old/` for the instant of the swap, and is what a load falls back
on if a crash hit that instant). Every file DCP wrote is listed with its SHA-256 and size in `manifest.sha256`
(each rank hashes a share of the files, rank 0 writes the list), and a load verifies them the same way, shared
out over the ranks, before DCP reads a byte: a damaged shard is named on every rank, with what to do.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

DCP_DIR = "checkpoint_dcp"  # the fsdp2 checkpoint directory, relative to the run directory
TRAINER_STATE_FILE = "trainer.pt"  # inside it: the state that is not sharded (epoch, history, RNG of every rank)
MANIFEST_FILE = "manifest.sha256"  # inside it: "<sha256>  <bytes>  <file>" for each file DCP wrote


def shard_model(model: nn.Module, blocks: list[nn.Module], device: torch.device, world_size: int,
                param_dtype: Optional[torch.dtype]) -> nn.Module:
    """fully_shard each block, then the model (in place); returns the model."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (world_size,))
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32 if param_dtype else None)
    for block in blocks:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


def sharded_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """(model, optimizer) state dicts of DTensor shards, keyed by parameter names (DCP's format)."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    return get_state_dict(model, optimizer)


def load_sharded_state(model: nn.Module, optimizer: torch.optim.Optimizer, model_state: dict,
                       optimizer_state: dict) -> None:
    from torch.distributed.checkpoint.state_dict import set_state_dict

    set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optimizer_state)


def save_dcp(run_dir: Path, sharded: dict[str, Any], rest: dict[str, Any], rank: int) -> None:
    """Write `sharded` (every rank calls it with its shards) with torch.distributed.checkpoint and `rest` (rank 0,
    as `trainer.pt`) as the run's checkpoint directory, atomically."""
    import torch.distributed.checkpoint as dcp

    from benchmarks.checkpoint import save_checkpoint

    final, tmp, old = _paths(run_dir)
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
    torch.distributed.barrier()
    dcp.save(sharded, checkpoint_id=str(tmp))  # ends with a collective: every rank's files are complete
    _write_manifest(tmp, rank)
    if rank == 0:
        save_checkpoint(tmp / TRAINER_STATE_FILE, rest)
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    torch.distributed.barrier()


def dcp_path(run_dir: Path) -> Optional[Path]:
    """The DCP checkpoint to resume from (the committed one, or the previous one a crash left mid-swap)."""
    final, _, old = _paths(run_dir)
    return final if final.is_dir() else old if old.is_dir() else None


def load_dcp(path: Path, template: dict[str, Any]) -> dict[str, Any]:
    """Load the checkpoint at `path` into `template` (shards of this world size; tensors in place, other values
    replaced) and return it, once every file matches the manifest (every rank calls it)."""
    import torch.distributed.checkpoint as dcp

    verify_dcp(path)
    dcp.load(template, checkpoint_id=str(path))
    return template


def _dcp_files(directory: Path) -> list[str]:
    """The files DCP wrote in `directory` (not trainer.pt, its digest, or the manifest), sorted: every rank lists
    the same ones."""
    ours = (MANIFEST_FILE, TRAINER_STATE_FILE)
    return sorted(p.name for p in Path(directory).iterdir() if p.is_file() and not p.name.startswith(ours))


def _gathered(value: Any) -> list[Any]:
    out = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, value)
    return out


def _hash_share(directory: Path, names: list[str]) -> tuple[dict[str, tuple[str, int]], list[str]]:
    """({name: (sha256, bytes)}, [problems]) for this rank's share of `names` (file i goes to rank i mod world);
    a file that cannot be read is a problem, not an exception: every rank must reach the gather that follows."""
    from benchmarks.integrity import sha256_of

    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    digests, problems = {}, []
    for name in names[rank::world]:
        try:
            digests[name] = sha256_of(Path(directory) / name)
        except FileNotFoundError:
            problems.append(f"{name} is missing")
        except OSError as err:
            problems.append(f"{name} cannot be read ({err})")
    return digests, problems


def _write_manifest(directory: Path, rank: int) -> None:
    """Every rank hashes its share of the DCP files; rank 0 writes the list (fsynced, then renamed into place)."""
    import os

    shares = _gathered(_hash_share(directory, _dcp_files(directory)))
    problems = [p for _, share in shares for p in share]
    if problems:
        raise OSError(f"the checkpoint just written in {directory} cannot be read back: {'; '.join(problems)}")
    digests = {name: entry for share, _ in shares for name, entry in share.items()}
    if rank == 0:
        tmp = directory / (MANIFEST_FILE + ".tmp")
        with open(tmp, "w") as f:
            f.write("".join(f"{digest}  {size}  {name}\n" for name, (digest, size) in sorted(digests.items())))
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(directory / MANIFEST_FILE)


def verify_dcp(directory: Path) -> None:
    """Raise CorruptFile on every rank unless each file of the DCP checkpoint `directory` matches its manifest
    entry (each rank checks a share). A manifest that cannot be parsed or lists nothing is damage too; a
    checkpoint written before manifests existed (none at all) passes."""
    from benchmarks.checkpoint import RESTART
    from benchmarks.integrity import CorruptFile

    manifest = Path(directory) / MANIFEST_FILE
    listed: dict[str, tuple[str, int]] = {}
    problems = []
    if manifest.is_file():
        try:
            for line in manifest.read_text().splitlines():
                digest, size, name = line.split(maxsplit=2)
                listed[name] = (digest, int(size))
        except (OSError, UnicodeDecodeError, ValueError) as err:
            problems.append(f"its manifest cannot be read ({err})")
        if not listed and not problems:
            problems.append("its manifest lists no file")
    digests, unreadable = _hash_share(directory, sorted(listed))
    problems += unreadable
    for name, actual in digests.items():
        if actual != listed[name]:
            problems.append(f"{name} is {actual[1]} bytes with SHA-256 {actual[0][:16]}..., written as "
                            f"{listed[name][1]} bytes with SHA-256 {listed[name][0][:16]}...")
    problems = sorted({p for share in _gathered(problems) for p in share})
    if problems:
        raise CorruptFile(f"the checkpoint {directory} is damaged ({'; '.join(problems)}, per {manifest}); "
                          f"{RESTART.replace('delete it', 'delete that directory')}")


def remove_dcp(run_dir: Path) -> None:
    for path in _paths(run_dir):
        shutil.rmtree(path, ignore_errors=True)


def full_weights(module: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(full tensors on the CPU by name, {dropped tied name: kept name}) of `module`'s state dict, shards gathered
    one tensor at a time (a collective under fsdp2: every rank calls it; rank 0 alone keeps the tensors, the
    others get an empty dict). Tied tensors are kept once, under the alphabetically first of their names, as
    safetensors' save_model does (the mapping is its file metadata)."""
    from sema.sharding import is_sharded

    names: dict[int, list[str]] = {}
    for name, t in [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]:
        names.setdefault(id(t), []).append(name)
    tied = {other: min(group) for group in names.values() if len(group) > 1 for other in group if other != min(group)}
    keep = not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0
    full = {}
    for key, value in module.state_dict().items():  # one tensor gathered at a time; only rank 0 keeps it
        if key in tied:
            continue
        gathered = value.full_tensor() if is_sharded(value) else value.detach()
        if keep:
            full[key] = gathered.cpu().clone()
        del gathered
    return full, tied


def _paths(run_dir: Path) -> tuple[Path, Path, Path]:
    base = Path(run_dir) / DCP_DIR
    return base, base.with_name(DCP_DIR + ".tmp"), base.with_name(DCP_DIR + ".old")

