"""result.json: the one record per run that every other tool reads (schema in docs/ARCHITECTURE.md).

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
# Packages whose versions go into the provenance of every run.
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_json_safe(obj), f, indent=1, allow_nan=False)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes the file private; results are meant to be read by others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_result(run_dir: Path) -> Optional[dict]:
    """The run's result.json, or None when there is none (or it cannot be parsed)."""
    path = Path(run_dir) / RESULT_FILE
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


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


def _hardware() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available()
        else [],
    }
    return info


def provenance(seed: int) -> dict[str, Any]:
    """Where a result came from: code version, command, package versions, machine, date, seed."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "command": shlex.join(sys.argv),
        "packages": _packages(),
        "hardware": _hardware(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seed": seed,
    }


def config_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys where two nested config dicts differ, as 'key: old -> new' lines."""
    if isinstance(old, dict) and isinstance(new, dict):
        diffs = []
        for key in sorted(set(old) | set(new), key=str):
            where = f"{prefix}.{key}" if prefix else str(key)
            diffs += config_differences(old.get(key, "<absent>"), new.get(key, "<absent>"), where)
        return diffs
    return [] if _json_safe(old) == _json_safe(new) else [f"{prefix}: {old!r} -> {new!r}"]
