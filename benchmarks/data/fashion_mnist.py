"""Fashion-MNIST (Xiao et al. 2017, 60k train / 10k test, 28x28 grey, 10 classes) read straight from idx files.

Where it is looked for, in order:

* `data_root` itself (the four idx files, gzipped or not), or torchvision's layout `<data_root>/FashionMNIST/raw/`;
* with no `data_root`: Debian's `dataset-fashion-mnist` package, `/usr/share/datasets/fashion-mnist/`.

The Debian files hold exactly the official content (their .gz containers differ, so torchvision's md5 check would
reject them; reading the idx format directly avoids that). `to_rgb32` pads to 32x32 and repeats the channel three
times, so networks with a CIFAR stem run on it unchanged.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Optional

import numpy as np

from benchmarks.data.paths import FASHION_MNIST_SYSTEM_DIR, missing

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# idx type codes (third byte of the magic number) -> numpy dtype (big-endian as stored).
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Read one idx file (optionally .gz): magic 0x0000TTNN (T = type code, N = number of dimensions)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an idx file (bad magic number {data[:4].hex()})")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=_IDX_DTYPES[data[2]], offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape} but the file holds {array.size} values")
    return array.reshape(shape)


def _find(folder: Path, stem: str) -> Optional[Path]:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def load_fashion_mnist(split: str, data_root: Optional[str] = None) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [N, 28, 28] and labels int64 [N] of `split` ("train" or "test")."""
    if split not in _FILES:
        raise ValueError(f"split={split!r} is not allowed; choose one of: {', '.join(_FILES)}")
    if data_root is None:
        folders = [FASHION_MNIST_SYSTEM_DIR]
    else:
        root = Path(data_root).expanduser()
        folders = [root, root / "FashionMNIST" / "raw", root / "fashion-mnist"]
    image_stem, label_stem = _FILES[split]
    for folder in folders:
        images, labels = _find(folder, image_stem), _find(folder, label_stem)
        if images and labels:
            x, y = read_idx(images), read_idx(labels).astype(np.int64)
            if x.ndim != 3 or len(x) != len(y):
                raise ValueError(f"{images}: expected [N, H, W] images matching {len(y)} labels, got {x.shape}")
            return np.ascontiguousarray(x), y
    raise missing(
        "fashion_mnist",
        folders,
        "  <data_root>/FashionMNIST/raw/{train-images-idx3-ubyte,train-labels-idx1-ubyte,"
        "t10k-images-idx3-ubyte,t10k-labels-idx1-ubyte}[.gz]  (or the four files directly in <data_root>)",
        "apt-get install dataset-fashion-mnist (files land in /usr/share/datasets/fashion-mnist), or copy the four "
        "idx files from github.com/zalandoresearch/fashion-mnist into the folder above",
    )


def to_rgb32(images: np.ndarray) -> np.ndarray:
    """[N, 28, 28] uint8 -> [N, 32, 32, 3] uint8: zero-pad 2 pixels each side, repeat the grey channel."""
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2)))
    return np.repeat(padded[..., None], 3, axis=-1)
