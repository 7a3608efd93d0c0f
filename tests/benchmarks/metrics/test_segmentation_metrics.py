"""Segmentation metrics against confusion matrices and IoUs computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from benchmarks.metrics.segmentation import confusion_matrix, segmentation_scores


def test_confusion_matrix_counts_pixels_by_true_and_predicted_class_and_skips_ignored():
    target = torch.tensor([[0, 0, 1], [1, 2, 255]])
    pred = torch.tensor([[0, 1, 1], [1, 0, 2]])
    # (true, pred) pairs: (0,0) (0,1) (1,1) (1,1) (2,0); the 255 pixel is ignored whatever its prediction
    expected = torch.tensor([[1, 1, 0], [0, 2, 0], [1, 0, 0]])
    assert torch.equal(confusion_matrix(pred, target, 3), expected)


def test_scores_match_hand_computed_iou_accuracy_and_class_accuracy():
    confusion = torch.tensor([[1, 1, 0], [0, 2, 0], [1, 0, 0]])
    scores = segmentation_scores(confusion)
    # IoU_0 = 1 / (2 + 2 - 1) = 1/3, IoU_1 = 2 / (2 + 3 - 2) = 2/3, IoU_2 = 0 / (1 + 0 - 0) = 0
    assert scores["miou"] == pytest.approx(100 * (1 / 3 + 2 / 3 + 0) / 3)
    assert scores["pixel_acc"] == pytest.approx(100 * 3 / 5)
    # class accuracy: 1/2, 2/2, 0/1
    assert scores["macc"] == pytest.approx(100 * (0.5 + 1 + 0) / 3)


def test_classes_absent_from_truth_and_prediction_are_left_out_of_the_mean():
    target = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, 0, 1, 0])
    scores = segmentation_scores(confusion_matrix(pred, target, num_classes=4))  # classes 2, 3 never occur
    assert scores["miou"] == pytest.approx(100 * (2 / 3 + 1 / 2) / 2)
    assert not math.isnan(scores["macc"])


def test_perfect_prediction_scores_100():
    target = torch.randint(0, 5, (2, 8, 8), generator=torch.Generator().manual_seed(0))
    scores = segmentation_scores(confusion_matrix(target.clone(), target, 5))
    assert scores == {"miou": 100.0, "pixel_acc": 100.0, "macc": 100.0}


def test_out_of_range_labels_and_shape_mismatch_are_rejected():
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 7]), 3)
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(torch.zeros(2, 2), torch.zeros(2, 3), 3)
