"""result.json: the one record per run that every other tool reads (schema in docs/ARCHITECTURE.md).

The engine and the framework runners (benchmarks/frameworks.py) both start it with `new_result` and keep its
summary with `summarize`, so the two paths cannot drift apart. Summary, over the evaluated epochs of `history`,
of the reported weights (the average's metrics for an averaging method, else the model's):

    final          the last evaluation           final_online   the online model's last evaluation
    best           the evaluation with the best headline, best_epoch its epoch;
                   best_online the online model's evaluation with its best headline
    median_last    per metric, the median over the last k evaluations (trainer.median_of_last, default LAST_K = 3;
                   openmixup's CIFAR tables use the median of the last 10 epochs); median_last_k = the k used;
                   median_last_online the same over the online model's evaluations

Written atomically (temporary file in the same folder, fsync, rename), so a reader or a killed run never sees a
half-written file. Non-finite floats (a diverged loss) are stored as null, keeping the file strict JSON.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

RESULT_FILE = "result.json"
LAST_K = 3  # evaluations in `median_last` by default (trainer.median_of_last; the CIFAR recipes: 10)
# Packages whose versions go into the provenance of every run.
# Config keys that may differ between a run and its rerun in the same directory (where files go, how many threads
# or loader workers, where the data lives): they are also left out of the run directory's name.
IGNORED_FOR_RESUME = ("logger", "out_dir", "riders", "trainer.num_threads", "task.num_workers",
                      "trainer.dist_timeout_min", "trainer.checkpoint_every_steps",
                      "trainer.checkpoint_in_background")  # may change on a rerun
# The recipe's averaging defaults: a rerun compares what they resolved into (the method node's fields), not the node
# itself, so a key added there (tail_start) leaves the runs of the methods that do not read it comparable.
READ_THROUGH_METHOD = ("averaging",)
# A moved dataset folder may resume a run, but the embedded default and a real dataset must never be mixed up.
ONLY_PRESENCE_FOR_RESUME = ("task.data_root",)
PRESENCE_LABELS = ("a real dataset folder", "the embedded default")  # [set, unset]
PROVENANCE_PACKAGES = ("sema-bench", "torch", "torchvision", "timm", "numpy", "hydra-core", "omegaconf", "wandb")
_REPO_ROOT = Path(__file__).resolve().parents[1]


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write `obj` as JSON to `path` so that `path` always holds either the old or the new content."""
    write_text_atomic(path, json.dumps(_json_safe(obj), indent=1, allow_nan=False))


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` so that `path` always holds either the old or the new content (a temporary file in
    the same folder, fsync'ed, then renamed over it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes the file private; results are meant to be read by others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_result(run_dir: Path) -> Optional[dict]:
    """The run's result.json, or None when there is none or it is unreadable (empty, torn, not UTF-8, not an
    object with a known status): the run's checkpoint, which carries its config, then decides what resumes."""
    path = Path(run_dir) / RESULT_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("status") not in ("completed", "failed", "running"):
        return None
    return record


def _git(*args: str) -> Optional[str]:
    try:
        out = subprocess.run(["git", "-C", str(_REPO_ROOT), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _packages() -> dict[str, Optional[str]]:
    versions = {}
    for name in PROVENANCE_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _cpu_model() -> Optional[str]:
    """The CPU's model name (/proc/cpuinfo on Linux), or None where the platform does not say."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() or None
    except OSError:
        pass
    return None


def _hardware() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        # float results on the CPU are bit for bit only on one kind of CPU: the kernels torch picks follow its
        # instruction set (capability AVX2 / AVX512 / ...), so a rerun elsewhere may differ in the last bits
        "cpu_model": _cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available()
        else [],
    }
    return info


CODE_VERSION_ENV = "SEMA_BENCH_CODE_VERSION"  # "<commit>:<dirty 0|1>", set by the suite for its worker processes
_code_version: Optional[tuple[Optional[str], Optional[bool]]] = None


def code_version() -> tuple[Optional[str], Optional[bool]]:
    """(git commit, dirty) of the code this process runs, read once per process: a commit made while a long job
    runs is not the code it imported. The suite passes its own to its workers (CODE_VERSION_ENV)."""
    global _code_version
    if _code_version is None:
        given = os.environ.get(CODE_VERSION_ENV)
        if given:
            commit, _, dirty = given.rpartition(":")
            _code_version = (commit or None, None if dirty not in ("0", "1") else dirty == "1")
        else:
            status = _git("status", "--porcelain", "--untracked-files=no")
            _code_version = (_git("rev-parse", "HEAD"), None if status is None else bool(status))
    return _code_version


def provenance(seed: int) -> dict[str, Any]:
    """Where a result came from: code version (`code_version`), command, package versions, machine, date, seed."""
    commit, dirty = code_version()
    return {
        "git_commit": commit,
        "git_dirty": dirty,
        "command": shlex.join(sys.argv),
        "packages": _packages(),
        "hardware": _hardware(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seed": seed,
    }


class ConfigMismatch(RuntimeError):
    """The run directory holds a run (or a checkpoint) made with a different config."""


def comparable_config(config: dict, prefix: str = "") -> dict:
    """`config` as a rerun in the same directory must match it: IGNORED_FOR_RESUME and READ_THROUGH_METHOD left
    out, the ONLY_PRESENCE_FOR_RESUME keys reduced to whether they are set."""
    out = {}
    for key, value in config.items():
        where = f"{prefix}{key}"
        if where in ONLY_PRESENCE_FOR_RESUME:  # idempotent: a config compared already keeps its label
            out[key] = value if value in PRESENCE_LABELS else PRESENCE_LABELS[value is None]
        elif where not in IGNORED_FOR_RESUME and where not in READ_THROUGH_METHOD:
            out[key] = comparable_config(value, f"{where}.") if isinstance(value, dict) else value
    return out


# Config fields added after runs were made whose null reproduces what those runs did: a config that lacks one
# equals a config that holds it as null (and only for these keys: elsewhere null may mean something of its own).
ADDED_AS_NULL = ("method.bn_update_batches",)


def config_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys where two nested config dicts differ, as 'key: old -> new' lines (ADDED_AS_NULL: absent =
    null)."""
    if isinstance(old, dict) and isinstance(new, dict):
        diffs = []
        for key in sorted(set(old) | set(new), key=str):
            where = f"{prefix}.{key}" if prefix else str(key)
            if where in ADDED_AS_NULL and old.get(key) is None and new.get(key) is None:
                continue
            diffs += config_differences(old.get(key, "<absent>"), new.get(key, "<absent>"), where)
        return diffs
    return [] if _json_safe(old) == _json_safe(new) else [f"{prefix}: {old!r} -> {new!r}"]


def new_result(cfg: Any, *, dataset: Any = None, headline: Optional[str] = None,
               higher_is_better: Optional[bool] = None, notes: Optional[list] = None,
               method_kwargs: Optional[dict] = None) -> dict[str, Any]:
    """The record of a run that starts now (status "running"), with its resolved config and provenance."""
    from omegaconf import OmegaConf

    return {
        "status": "running", "task": cfg.task.name, "dataset": dataset if dataset is not None else cfg.task.dataset,
        "model": cfg.task.model, "method": cfg.method.name, "method_kwargs": method_kwargs, "seed": cfg.seed,
        "profile": cfg.profile, "headline": headline, "higher_is_better": higher_is_better, "final": None,
        "final_online": None, "best": None, "best_epoch": None, "best_online": None, "median_last": None,
        "median_last_k": None, "median_last_online": None,
        "history": [],
        "wall_time_s": None, "throughput_samples_per_s": None, "throughput": None, "peak_memory_mb": None,
        "runtime": None,
        "config": OmegaConf.to_container(cfg, resolve=True), "notes": list(notes or []), "error": None,
        "provenance": provenance(cfg.seed),
    }


def reported(record: dict) -> Optional[dict]:
    """The metrics that represent an epoch: the average's when it was evaluated, else the online model's."""
    return record["avg"] if record.get("avg") is not None else record["online"]


def summarize(result: dict, *, wall_time_s: float, samples: int, train_time_s: float,
              peak_memory_mb: Optional[float], last_k: int = LAST_K) -> None:
    """Fill final / final_online / best / best_epoch / median_last (over the last `last_k` evaluations) and the
    timings from result["history"]."""
    import statistics

    evaluated = [r for r in result["history"] if r["online"] is not None]
    if evaluated:
        sign = 1.0 if result["higher_is_better"] else -1.0
        last = evaluated[-1]
        result["final"], result["final_online"] = dict(reported(last)), dict(last["online"])
        best = max(evaluated, key=lambda r: sign * reported(r)[result["headline"]])
        result["best"], result["best_epoch"] = dict(reported(best)), best["epoch"]
        result["best_online"] = dict(max(evaluated, key=lambda r: sign * r["online"][result["headline"]])["online"])

        def median_of(tail: list[dict]) -> dict:
            return {k: statistics.median(m[k] for m in tail) for k in tail[-1]
                    if all(isinstance(m.get(k), (int, float)) for m in tail)}

        result["median_last_k"] = len(evaluated[-last_k:])
        result["median_last"] = median_of([reported(r) for r in evaluated[-last_k:]])
        result["median_last_online"] = median_of([r["online"] for r in evaluated[-last_k:]])
    result["wall_time_s"] = wall_time_s
    if train_time_s > 0:
        result["throughput_samples_per_s"] = samples / train_time_s
    result["peak_memory_mb"] = peak_memory_mb


def peak_memory_mb(device: Any = None) -> float:
    """Peak memory of this process: CUDA's allocator peak on a CUDA device, else the resident set size."""
    import resource

    import torch

    if device is not None and getattr(device, "type", device) == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
