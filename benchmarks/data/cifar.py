"""CIFAR-10 / CIFAR-100 read from torchvision's layout (the extracted python-version archives), never downloaded.

    <data_root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}
    <data_root>/cifar-100-python/{train, test, meta}

The files are the official pickles (dicts with `data` [N, 3072] uint8 in CHW order and `labels` or
`fine_labels`); they are read here directly, without torchvision's md5 check, so a partial or re-packed copy works.
They are unpickled with `SafeUnpickler`, which builds only what those files hold (dicts, lists, strings, numbers
and numpy arrays): a crafted file in `task.data_root` cannot run code (plain `pickle.load` would call anything).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Optional

import numpy as np

from benchmarks.data.paths import missing

_LAYOUT = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels"),
}
_URL = {
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
}


# The only globals the official CIFAR pickles (and numpy arrays pickled by numpy 1 or 2) refer to.
SAFE_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
})


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that refuses every global outside SAFE_GLOBALS (no functions, no classes to call)."""

    def find_class(self, module: str, name: str):
        if (module, name) in SAFE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name}: a CIFAR file holds only arrays, lists and "
                                     "strings")


def _read_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    how = ("replace it with the file of the official python-version archive "
           "(cifar-10-python.tar.gz / cifar-100-python.tar.gz)")
    try:
        with open(path, "rb") as f:
            entry = SafeUnpickler(f, encoding="latin1").load()
        data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        labels = np.asarray(entry[label_key], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError) as err:
        raise ValueError(f"{path} is not a CIFAR batch file ({type(err).__name__}: {err}); {how}") from err
    if len(data) != len(labels):
        raise ValueError(f"{path} holds {len(data)} images but {len(labels)} labels; {how}")
    return np.ascontiguousarray(data), labels


def load_cifar(name: str, split: str, data_root: Optional[str]) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [N, 32, 32, 3] and labels int64 [N] of CIFAR-10 (`name="cifar10"`) or CIFAR-100."""
    if name not in _LAYOUT:
        raise ValueError(f"name={name!r} is not allowed; choose one of: {', '.join(_LAYOUT)}")
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r} is not allowed; choose one of: train, test")
    folder_name, train_files, test_files, label_key = _LAYOUT[name]
    files = train_files if split == "train" else test_files
    folder = Path(data_root).expanduser() / folder_name if data_root else None
    if folder is None or not all((folder / f).is_file() for f in files):
        raise missing(
            name,
            [folder] if folder else [],
            f"  <data_root>/{folder_name}/{{{', '.join(train_files + test_files)}}}",
            f"download {_URL[name]} and extract it into <data_root> (tar xzf ...), or run "
            f"torchvision.datasets.{name.upper()}(<data_root>, download=True) "
            "on a machine with a network",
        )
    parts = [_read_batch(folder / f, label_key) for f in files]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
