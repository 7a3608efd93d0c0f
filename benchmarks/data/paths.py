"""Where datasets live, and the one error message a missing dataset gives.

Real datasets are never downloaded: a loader looks in `data_root` (from the task config) or in the embedded
default location, and when the files are not there it raises `MissingDataset`, which says which files to put
in which folder and how to get them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

# Debian's `dataset-fashion-mnist` package (apt-get install dataset-fashion-mnist) puts the four idx .gz files here.
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


class MissingDataset(FileNotFoundError):
    """A dataset's files are not where the config points; the message says what to put where."""


def missing(dataset: str, searched: Sequence[Path], layout: str, how: str) -> MissingDataset:
    """Build the error for a dataset not found in any of `searched` (layout: the expected tree; how: how to get it)."""
    where = "\n".join(f"  {p}" for p in searched) or "  (no folder given: set task.data_root=/path/to/data)"
    return MissingDataset(
        f"dataset {dataset!r} not found. Looked in:\n{where}\n"
        f"Expected layout under task.data_root:\n{layout}\nHow to get it: {how}"
    )


def first_existing(paths: Sequence[Path]) -> Optional[Path]:
    """The first of `paths` that exists, or None."""
    for path in paths:
        if path.exists():
            return path
    return None
