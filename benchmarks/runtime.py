"""Facts about where a run executes, derived in one place: the dataset cache, batches on the device, the number of
optimizer steps an epoch has.

    cache_dir()                                   # $SEMA_BENCH_CACHE, else ~/.cache/sema-bench
    to_device(batch, device)                      # every tensor of a nested batch (tuples, lists, dicts)
    steps_per_epoch(n, batch_size, world_size, drop_last, cap, accum)

Steps per epoch, as the engine's DataLoader (with a DistributedSampler under torchrun) gives them:

    per_rank = floor(n / world_size) if drop_last else ceil(n / world_size)
    batches = floor(per_rank / batch_size) if drop_last else ceil(per_rank / batch_size)
    steps = min(floor(batches / accum), cap)            # accum = trainer.grad_accum_steps
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Optional

import torch


def cache_dir() -> Path:
    """Where embedded datasets are prepared once and reused: $SEMA_BENCH_CACHE, else ~/.cache/sema-bench."""
    return Path(os.environ.get("SEMA_BENCH_CACHE", Path.home() / ".cache" / "sema-bench"))


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor in a (nested) batch to `device`; objects with `.to` (e.g. HF BatchEncoding) too."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        moved = [to_device(v, device) for v in batch]
        return type(batch)(*moved) if hasattr(batch, "_fields") else type(batch)(moved)
    if hasattr(batch, "to") and callable(batch.to):
        return batch.to(device)
    return batch


def steps_per_epoch(num_examples: int, batch_size: int, world_size: int = 1, drop_last: bool = True,
                    cap: Optional[int] = None, accum: int = 1) -> int:
    """Optimizer steps in one epoch of `num_examples` (see the module docstring for the formula); with `accum`
    micro-batches per step, an incomplete group at the epoch's end is not trained on."""
    if world_size > 1:
        per_rank = num_examples // world_size if drop_last else math.ceil(num_examples / world_size)
    else:
        per_rank = num_examples
    batches = per_rank // batch_size if drop_last else math.ceil(per_rank / batch_size)
    steps = batches // accum
    return min(steps, cap) if cap else steps


# Environment variables that say a job was given GPUs (Slurm's --gpus / --gres, or an explicit device list).
GPU_REQUEST_VARS = ("SLURM_GPUS_ON_NODE", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "SLURM_GPUS", "CUDA_VISIBLE_DEVICES")
GPU_COUNT_VARS = ("SLURM_GPUS_ON_NODE", "SLURM_GPUS")  # counts; the others list device ids


class CudaUnavailable(RuntimeError):
    """A GPU was expected for this run, but CUDA is not usable."""


def gpu_requested(profile: str) -> Optional[str]:
    """Why this run expects a GPU (a paper recipe, a job given GPUs), or None."""
    if profile == "paper":
        return "a paper recipe (profile=paper) trains on GPUs"
    for var in GPU_REQUEST_VARS:
        value = os.environ.get(var, "").strip()
        none = ("-1", "NoDevFiles") + (("0",) if var in GPU_COUNT_VARS else ())  # "0" is a device in a list
        if value and value not in none:
            return f"the job was given GPUs ({var}={value})"
    return None


def cuda_diagnosis() -> str:
    """What torch sees: its build, CUDA availability and, when CUDA fails to initialise, why."""
    found = (f"torch {torch.__version__} (built for CUDA {torch.version.cuda or 'none'}), "
             f"torch.cuda.is_available()={torch.cuda.is_available()}, devices={torch.cuda.device_count()}")
    try:
        torch.cuda.init()
    except Exception as err:  # noqa: BLE001  (the reason is the message, whatever its type)
        found += f", CUDA initialisation failed: {err}"
    return found


def choose_device(choice: str, local_rank: int, profile: str) -> torch.device:
    """The run's device for trainer.device=auto|cpu|cuda. Never falls back to the CPU silently: when CUDA is asked
    for, or a GPU is expected (gpu_requested) with `auto`, and CUDA is not usable, raises CudaUnavailable with what
    was found and how to run on the CPU on purpose."""
    if choice == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)  # each rank on its own GPU, not a context on GPU 0 for every rank
        return torch.device("cuda", local_rank)
    reason = "trainer.device=cuda" if choice == "cuda" else gpu_requested(profile)
    if reason is None:
        return torch.device("cpu")
    raise CudaUnavailable(f"a GPU is expected ({reason}) but CUDA is not usable: {cuda_diagnosis()}. Fix the "
                          "driver/torch build, or run on the CPU on purpose with trainer.device=cpu")


def describe_runtime(device: torch.device, world_size: int, precision: str) -> dict[str, Any]:
    """What result.json records about where the run trained."""
    cuda = device.type == "cuda"
    return {"device": str(device), "gpu": torch.cuda.get_device_name(device) if cuda else None,
            "cuda": torch.version.cuda if cuda else None,
            "cudnn": torch.backends.cudnn.version() if cuda else None,
            "world_size": world_size, "precision": precision}


# Dense peak FLOP/s per GPU by (name fragment, precision), from the vendors' data sheets (SXM parts; no sparsity).
# "float32" means TF32 matrix products (allowed when not deterministic); an unknown GPU gives no MFU.
PEAK_FLOPS: dict[str, dict[str, float]] = {
    "H200": {"bf16": 989e12, "fp16": 989e12, "float32": 494e12},
    "H100": {"bf16": 989e12, "fp16": 989e12, "float32": 494e12},
    "A100": {"bf16": 312e12, "fp16": 312e12, "float32": 156e12},
    "L40S": {"bf16": 362e12, "fp16": 362e12, "float32": 183e12},
}


def peak_flops(gpu: Optional[str], precision: str) -> Optional[float]:
    """The GPU's dense peak FLOP/s at `precision` (PEAK_FLOPS), or None (CPU, or a GPU not in the table)."""
    for fragment, peaks in PEAK_FLOPS.items():
        if gpu and fragment in gpu:
            return peaks.get(precision)
    return None
