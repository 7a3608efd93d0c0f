"""Fashion-MNIST idx reader: tiny files written in the real format, torchvision's layout, and the Debian files."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.data.fashion_mnist import load_fashion_mnist, read_idx, to_rgb32
from benchmarks.data.paths import FASHION_MNIST_SYSTEM_DIR, MissingDataset
from fixture_writers import write_idx


def tiny_set(folder, n=5, gz=True):
    folder.mkdir(parents=True, exist_ok=True)
    images = np.arange(n * 28 * 28, dtype=np.int64).reshape(n, 28, 28) % 251
    labels = np.arange(n) % 10
    suffix = ".gz" if gz else ""
    for split, prefix in (("train", "train"), ("test", "t10k")):
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz)
    return images.astype(np.uint8), labels


@pytest.mark.parametrize("layout, gz", [("", True), ("FashionMNIST/raw", False), ("FashionMNIST/raw", True)])
def test_reads_tiny_idx_files_in_both_layouts(tmp_path, layout, gz):
    images, labels = tiny_set(tmp_path / layout if layout else tmp_path, gz=gz)
    x, y = load_fashion_mnist("test", str(tmp_path))
    assert x.dtype == np.uint8 and x.shape == (5, 28, 28) and np.array_equal(x, images)
    assert y.dtype == np.int64 and y.tolist() == labels.tolist()


def test_to_rgb32_pads_and_repeats():
    x = np.full((2, 28, 28), 7, dtype=np.uint8)
    out = to_rgb32(x)
    assert out.shape == (2, 32, 32, 3) and out[:, 2:30, 2:30].min() == 7
    assert out[:, :2].max() == 0 and out[:, :, 30:].max() == 0 and np.array_equal(out[..., 0], out[..., 2])


def test_bad_and_missing_files_say_what_is_wrong(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an idx file"):
        read_idx(tmp_path / "bad")
    with pytest.raises(MissingDataset) as err:
        load_fashion_mnist("train", str(tmp_path / "nowhere"))
    message = str(err.value)
    assert "FashionMNIST/raw/" in message and "train-images-idx3-ubyte" in message and "apt-get install" in message
    with pytest.raises(ValueError, match="split='val' is not allowed"):
        load_fashion_mnist("val", str(tmp_path))


@pytest.mark.skipif(not FASHION_MNIST_SYSTEM_DIR.exists(), reason="Debian dataset-fashion-mnist not installed")
def test_debian_package_holds_the_official_sets():
    x, y = load_fashion_mnist("train")
    assert x.shape == (60000, 28, 28) and np.bincount(y).tolist() == [6000] * 10
    x, y = load_fashion_mnist("test")
    assert x.shape == (10000, 28, 28) and np.bincount(y).tolist() == [1000] * 10
    assert y[:5].tolist() == [9, 2, 1, 1, 6]  # the official test set starts ankle boot, pullover, trouser, ...
