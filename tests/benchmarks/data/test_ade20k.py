"""ADE20K layout reader and the shared image/mask dataset, on tiny files written in the real format."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.data import ade20k
from benchmarks.data.paths import MissingDataset
from benchmarks.data.segmentation_pairs import IGNORE_INDEX, SegmentationPairs, shift_labels
from fixture_writers import write_ade20k


def test_pairs_match_images_to_annotations_by_stem(tmp_path):
    write_ade20k(tmp_path)
    pairs = ade20k.ade20k_pairs(str(tmp_path), "train")
    assert [(i.name, a.name) for i, a in pairs] == [
        (f"ADE_train_{k:08d}.jpg", f"ADE_train_{k:08d}.png") for k in (1, 2, 3)
    ]
    # data_root may also be the ADEChallengeData2016 folder itself
    assert (
        ade20k.ade20k_pairs(str(tmp_path / "ADEChallengeData2016"), "val")[0][0].name
        == "ADE_val_00000001.jpg"
    )


def test_label_shift_ignores_zero_and_moves_classes_down_by_one():
    assert shift_labels(np.array([0, 1, 150], dtype=np.uint8)).tolist() == [IGNORE_INDEX, 0, 149]


def test_dataset_resizes_normalises_and_shifts(tmp_path):
    write_ade20k(tmp_path)
    data = SegmentationPairs(
        ade20k.ade20k_pairs(str(tmp_path), "val"), image_size=16, train=False, zero_is_ignore=True
    )
    image, mask = data[0]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32 and mask.shape == (16, 16)
    assert set(mask.unique().tolist()) <= {0, 149, IGNORE_INDEX}
    assert (mask[:, :6] == 149).all() and (mask[:, -6:] == IGNORE_INDEX).all()  # nearest-neighbour resize


def test_missing_root_and_missing_annotation_are_actionable(tmp_path):
    with pytest.raises(MissingDataset, match="ADEChallengeData2016/images"):
        ade20k.ade20k_pairs(str(tmp_path / "nowhere"), "train")
    with pytest.raises(MissingDataset, match="task.data_root"):
        ade20k.ade20k_pairs(None, "train")
    base = write_ade20k(tmp_path)
    (base / "annotations" / "training" / "ADE_train_00000002.png").unlink()
    with pytest.raises(FileNotFoundError, match="ADE_train_00000002.png"):
        ade20k.ade20k_pairs(str(tmp_path), "train")
    with pytest.raises(ValueError, match="train, val"):
        ade20k.ade20k_pairs(str(tmp_path), "test")
