"""CIFAR-10/100 readers on tiny pickles written in the official python-version layout."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.data.cifar import load_cifar
from benchmarks.data.paths import MissingDataset
from fixture_writers import write_cifar10, write_cifar100


def test_cifar100_layout_and_pixel_order(tmp_path):
    write_cifar100(tmp_path)
    x, y = load_cifar("cifar100", "train", str(tmp_path))
    assert x.shape == (4, 32, 32, 3) and x.dtype == np.uint8
    assert x[1, 5, 7].tolist() == [1, 11, 21]  # HWC: channel c of image 1 = 10*c + 1
    assert y.tolist() == [0, 7, 14, 21]
    x, y = load_cifar("cifar100", "test", str(tmp_path))
    assert x.shape == (2, 32, 32, 3) and x[0, 0, 0].tolist() == [100, 110, 120]


def test_cifar10_concatenates_the_five_training_batches(tmp_path):
    write_cifar10(tmp_path)
    x, y = load_cifar("cifar10", "train", str(tmp_path))
    assert x.shape == (10, 32, 32, 3) and y.tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5]
    assert x[2, 0, 0, 0] == 20  # first image of data_batch_2
    x, y = load_cifar("cifar10", "test", str(tmp_path))
    assert y.tolist() == [5, 6]


def test_missing_cifar_says_what_to_put_where(tmp_path):
    with pytest.raises(MissingDataset) as err:
        load_cifar("cifar100", "train", str(tmp_path))
    message = str(err.value)
    assert str(tmp_path / "cifar-100-python") in message and "cifar-100-python/{train, test}" in message
    assert "cifar-100-python.tar.gz" in message
    with pytest.raises(MissingDataset, match="task.data_root"):
        load_cifar("cifar10", "train", None)


class _Exploit:
    """Unpickling this calls os.system: what a crafted dataset file would do with plain pickle.load."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_a_crafted_cifar_file_cannot_run_code_and_garbage_is_named(tmp_path):
    import pickle

    write_cifar100(tmp_path)
    marker = tmp_path / "pwned"
    train = tmp_path / "cifar-100-python" / "train"
    train.write_bytes(pickle.dumps({"data": _Exploit(marker), "fine_labels": [0]}))
    with pytest.raises(ValueError, match=r"train is not a CIFAR batch file \(UnpicklingError: refused to load "
                                         r"posix.system"):
        load_cifar("cifar100", "train", str(tmp_path))
    assert not marker.exists()  # nothing ran
    pickle.loads(pickle.dumps(_Exploit(marker)))  # the payload is real: plain pickle runs it
    assert marker.exists()
    train.write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="not a CIFAR batch file .*official python-version archive"):
        load_cifar("cifar100", "train", str(tmp_path))
