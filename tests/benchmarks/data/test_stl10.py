"""STL-10 binaries (torchvision's layout) on tiny fixture files written here."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.data.paths import MissingDataset
from benchmarks.data.stl10 import load_stl10


def test_column_major_images_and_one_based_labels_are_converted(tmp_path):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    images = np.zeros((2, 96, 96, 3), dtype=np.uint8)  # what the reader must return: [N, H, W, C]
    images[1, 5, 7, 2] = 200  # image 1, row 5, column 7, blue
    images.transpose(0, 3, 2, 1).tofile(folder / "train_X.bin")  # stored as [N, C, W, H]
    np.array([1, 10], dtype=np.uint8).tofile(folder / "train_y.bin")
    x, y = load_stl10("train", str(tmp_path))
    assert x.shape == (2, 96, 96, 3) and x[1, 5, 7, 2] == 200 and x.sum() == 200
    assert y.tolist() == [0, 9]
    images[:1].transpose(0, 3, 2, 1).tofile(folder / "unlabeled_X.bin")
    x, y = load_stl10("unlabeled", str(tmp_path))
    assert x.shape == (1, 96, 96, 3) and y is None


def test_missing_files_say_what_to_put_where(tmp_path):
    with pytest.raises(MissingDataset, match="stl10_binary"):
        load_stl10("test", str(tmp_path))
    with pytest.raises(ValueError, match="train, test, unlabeled"):
        load_stl10("val", str(tmp_path))
