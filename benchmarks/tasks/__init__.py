"""The registered tasks: name -> module. Each module defines `Config` and `setup` (see protocol.py).

Modules are imported on demand so a task's heavy dependencies load only when it runs.
"""

from __future__ import annotations

import importlib
from types import ModuleType

TASKS: dict[str, str] = {
    "classification": "benchmarks.tasks.classification",
    "ssl": "benchmarks.tasks.ssl",
    "regression": "benchmarks.tasks.regression",
    "video": "benchmarks.tasks.video",
    "detection": "benchmarks.tasks.detection",
    "segmentation": "benchmarks.tasks.segmentation",
    "generation": "benchmarks.tasks.generation",
    "lm": "benchmarks.tasks.lm",
}


def load_task(name: str) -> ModuleType:
    """Import the task module registered as `name`; unknown names list the allowed ones."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; allowed: {', '.join(sorted(TASKS))}")
    return importlib.import_module(TASKS[name])
