"""RCF-MNIST: the openmixup recipe on hand-made inputs, seeded determinism, cache round trip, CIFAR backgrounds."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.data import rcf_mnist
from benchmarks.data.paths import MissingDataset
from fixture_writers import write_cifar10


def test_compose_paints_pixels_above_two_white_on_all_channels():
    silhouette = np.zeros((1, 28, 28), dtype=np.uint8)
    silhouette[0, 5, 9] = 3  # > 2: painted
    silhouette[0, 6, 9] = 2  # not > 2: background stays
    background = np.full((1, 32, 32, 3), 40, dtype=np.uint8)
    out = rcf_mnist.compose(silhouette, np.array([0.0]), background)
    painted = np.argwhere((out[0] == 255).all(axis=-1))
    assert painted.tolist() == [[7, 11]]  # padded by 2 on each side, no rotation
    assert (out[0].reshape(-1, 3) == 40).all(axis=1).sum() == 32 * 32 - 1


def test_compose_rotates_counter_clockwise_about_the_centre():
    silhouette = np.zeros((1, 28, 28), dtype=np.uint8)
    silhouette[0, 0, 14] = 255  # padded position (row 2, col 16)
    out = rcf_mnist.compose(silhouette, np.array([90.0]), np.zeros((1, 32, 32, 3), dtype=np.uint8))
    # A quarter turn counter-clockwise of a 32x32 image maps (r, c) -> (31 - c, r): (2, 16) -> (15, 2).
    assert np.argwhere(out[0, :, :, 0] == 255).tolist() == [[15, 2]]


def test_background_of_image_i_is_i_mod_n():
    silhouettes = np.zeros((5, 28, 28), dtype=np.uint8)
    backgrounds = np.stack([np.full((32, 32, 3), v, dtype=np.uint8) for v in (10, 20)])
    out = rcf_mnist.compose(silhouettes, np.zeros(5), backgrounds)
    assert out[:, 0, 0, 0].tolist() == [10, 20, 10, 20, 10]


def test_angles_are_multiples_of_six_seeded_and_prefix_stable():
    a = rcf_mnist.draw_angles(1000, seed=1)
    assert set(np.unique(a)) <= set(range(0, 360, 6)) and len(np.unique(a)) == 60
    assert np.array_equal(a, rcf_mnist.draw_angles(1000, seed=1))
    assert np.array_equal(a[:10], rcf_mnist.draw_angles(10, seed=1))
    assert not np.array_equal(a, rcf_mnist.draw_angles(1000, seed=2))


def test_photo_crops_are_seeded_real_photo_pixels():
    crops = rcf_mnist.photo_crops(8, seed=0)
    assert crops.shape == (8, 32, 32, 3) and crops.dtype == np.uint8
    assert np.array_equal(crops, rcf_mnist.photo_crops(8, seed=0))
    assert crops.std() > 10  # real textures, not blank
    assert len(rcf_mnist.bundled_photos()) == 18


def test_offline_build_is_deterministic_and_cached(tmp_path):
    images, targets = rcf_mnist.build_rcf_mnist("test", 16, None, tmp_path)
    assert images.shape == (16, 32, 32, 3) and targets.shape == (16,)
    assert np.array_equal(targets, rcf_mnist.draw_angles(16, rcf_mnist.ANGLE_SEEDS["test"]))
    cached = list((tmp_path / "rcf_mnist").glob("*.npz"))
    assert len(cached) == 1
    again_images, again_targets = rcf_mnist.build_rcf_mnist("test", 16, None, tmp_path)
    assert np.array_equal(images, again_images) and np.array_equal(targets, again_targets)
    fresh_images, _ = rcf_mnist.build_rcf_mnist("test", 16, None, None)  # no cache: rebuilt, same bytes
    assert np.array_equal(images, fresh_images)


def test_cifar_root_gives_cifar_backgrounds(tmp_path):
    write_cifar10(tmp_path, per_batch=3, solid=True)
    images, _ = rcf_mnist.build_rcf_mnist("test", 4, str(tmp_path), None)  # Fashion-MNIST from the system copy
    unpainted = images[images != 255]
    assert set(np.unique(unpainted)) == {60}  # the test_batch background value, wherever no silhouette is


def test_missing_cifar_root_says_what_to_put_where(tmp_path):
    with pytest.raises(MissingDataset, match="cifar-10-batches-py"):
        rcf_mnist.build_rcf_mnist("train", 4, str(tmp_path), None)
    with pytest.raises(ValueError, match="train, test"):
        rcf_mnist.build_rcf_mnist("val", 4)
