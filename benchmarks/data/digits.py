"""scikit-learn's bundled digits (1,797 images, 8x8, 10 classes): the fastest real data, for smoke tests.

The split is fixed (a seeded 80/20 permutation that does not depend on the run's seed), so every run and method
sees the same train and test images.
"""

from __future__ import annotations

import numpy as np

SPLIT_SEED = 0  # fixed: the split is part of the dataset, not of the run
TEST_FRACTION = 0.2


def load_digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [N, 8, 8, 3] (values 0..16 scaled to 0..255, grey repeated) and labels int64 [N]."""
    from sklearn.datasets import load_digits as sklearn_digits

    if split not in ("train", "test"):
        raise ValueError(f"split={split!r} is not allowed; choose one of: train, test")
    bunch = sklearn_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
    n_test = int(round(len(labels) * TEST_FRACTION))
    index = order[n_test:] if split == "train" else order[:n_test]
    return np.repeat(images[index][..., None], 3, axis=-1), labels[index]
