"""sklearn digits: a fixed split independent of the run's seed."""

from __future__ import annotations

import numpy as np

from benchmarks.data.digits import load_digits


def test_fixed_disjoint_split():
    xtr, ytr = load_digits("train")
    xte, yte = load_digits("test")
    assert xtr.shape == (1438, 8, 8, 3) and xte.shape == (359, 8, 8, 3) and xtr.dtype == np.uint8
    assert xtr.max() == 255 and set(np.unique(ytr)) == set(range(10))
    again, _ = load_digits("train")
    assert np.array_equal(again, xtr)
    train_rows = {row.tobytes() for row in xtr[..., 0]}
    assert sum(row.tobytes() in train_rows for row in xte[..., 0]) < 10  # (digits has a few duplicate images)
