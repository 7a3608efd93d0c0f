"""Atomic checkpoints (at epoch ends, and inside epochs with trainer.checkpoint_every_steps) that load without
unpickling arbitrary objects.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts only (optimizer, scheduler and `sema`
state dicts are all of that kind), saved with `torch.save` to a temporary file and renamed over the old one, and
loaded with `torch.load(weights_only=True)`. RNG states are converted to tensors and plain lists for the same
reason.
"""

from __future__ import annotations

import copy
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

CHECKPOINT_FILE = "checkpoint.pt"  # the engine's epoch-end checkpoint, relative to the run directory
FRAMEWORK_WORK_DIR = "mmengine"  # mmengine's work_dir inside the run directory (task.framework=mmdet|mmseg)
FRAMEWORK_CHECKPOINT_FILE = f"{FRAMEWORK_WORK_DIR}/last_epoch.pth"  # its epoch-end checkpoint (resume)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write `state` to `path` atomically, with its SHA-256 beside it (benchmarks/integrity.py): the old checkpoint
    stays valid until the new one is complete."""
    from benchmarks.integrity import write_verified

    write_verified(Path(path), lambda tmp: torch.save(state, tmp))


RESTART = "delete it to restart the run from epoch 0"


class CheckpointWriter:
    """`save(path, state)` = `save_checkpoint`, by default in a background thread (trainer.checkpoint_in_background):
    the state is first copied to host memory (the step may go on changing the live tensors), one write runs at a
    time, and `wait()` (before the next save, at the end of the run, on a stop) joins it and re-raises its error."""

    def __init__(self, background: bool = True):
        self.background = background
        self._thread: Optional[threading.Thread] = None
        self._error: Optional[BaseException] = None

    def save(self, path: Path, state: dict[str, Any]) -> None:
        self.wait()
        if not self.background:
            save_checkpoint(path, state)
            return
        snapshot = host_copy(state)
        self._thread = threading.Thread(target=self._write, args=(Path(path), snapshot), name="checkpoint-writer")
        self._thread.start()

    def _write(self, path: Path, state: dict[str, Any]) -> None:
        try:
            save_checkpoint(path, state)
        except BaseException as err:  # handed to the training thread by wait()
            self._error = err

    def wait(self) -> None:
        """Block until the write in flight (if any) is on disk; raise its error if it failed."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            raise RuntimeError(f"writing the checkpoint failed: {err}") from err


def host_copy(value: Any) -> Any:
    """A deep copy of nested dicts, lists and tuples whose tensors are copied to the CPU (never shared); container
    types are kept (OrderedDict with a state dict's `_metadata`, namedtuples)."""
    if torch.is_tensor(value):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        out = type(value)((k, host_copy(v)) for k, v in value.items())
        if hasattr(value, "_metadata"):  # module versions of a Module.state_dict(), read by load_state_dict
            out._metadata = copy.deepcopy(value._metadata)
        return out
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # namedtuple
        return type(value)(*(host_copy(v) for v in value))
    if isinstance(value, (list, tuple)):
        return type(value)(host_copy(v) for v in value)
    return value


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint` (weights_only: no arbitrary code runs) after checking its
    digest; a damaged or unreadable file raises CorruptFile naming it and what to do."""
    from benchmarks.integrity import CorruptFile, verify

    verify(Path(path), RESTART)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - whatever a damaged file makes the unpickler raise
        # the first sentence only: torch's own advice (load with weights_only=False) is not what to do here
        first = str(err).strip().splitlines()[0].split(". ")[0] if str(err).strip() else type(err).__name__
        raise CorruptFile(f"{path} cannot be read as a checkpoint ({first}); {RESTART}") from err
    if not isinstance(state, dict):
        raise CorruptFile(f"{path} holds a {type(state).__name__}, not a checkpoint's dict; {RESTART}")
    return state


def rng_state(loader_generator: Optional[torch.Generator] = None) -> dict[str, Any]:
    """Every RNG the run draws from: torch CPU (+ CUDA), numpy, Python, and the data loader's generator."""
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": np_kind, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "python": {"version": py_version, "internal": list(py_internal), "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if loader_generator is not None:
        state["loader"] = loader_generator.get_state()
    return state


def set_rng_state(state: dict[str, Any], loader_generator: Optional[torch.Generator] = None) -> None:
    """Restore what `rng_state` saved."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if loader_generator is not None and "loader" in state:
        loader_generator.set_state(state["loader"])


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Inside: draw from any RNG freely; on exit (also on exception) every RNG is back where it was, so side
    computations (evaluation, BN re-estimation) never shift the training run's random stream."""
    saved = rng_state()
    try:
        yield
    finally:
        set_rng_state(saved)
