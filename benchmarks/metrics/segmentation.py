"""Semantic segmentation metrics from a confusion matrix: mIoU, pixel accuracy, mean class accuracy.

The conventions are mmsegmentation's: pixels labelled `ignore_index` are left out; a class that appears
neither in the ground truth nor in the predictions of the whole evaluation set has no IoU (NaN) and is left
out of the mean.
"""

from __future__ import annotations

import torch


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255
) -> torch.Tensor:
    """[num_classes, num_classes] int64 counts; row = true class, column = predicted class."""
    if pred.shape != target.shape:
        raise ValueError(
            f"prediction shape {tuple(pred.shape)} differs from target shape {tuple(target.shape)}"
        )
    valid = target != ignore_index
    target, pred = target[valid].long(), pred[valid].long()
    if target.numel() and (target.min() < 0 or target.max() >= num_classes):
        raise ValueError(
            f"target labels must lie in [0, {num_classes}) or equal ignore_index={ignore_index}; "
            f"got range [{int(target.min())}, {int(target.max())}]"
        )
    counts = torch.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def segmentation_scores(confusion: torch.Tensor) -> dict[str, float]:
    """miou, pixel_acc and macc (mean per-class accuracy), in percent, from a confusion matrix."""
    confusion = confusion.double()
    true_positive = confusion.diag()
    per_true_class = confusion.sum(1)
    union = per_true_class + confusion.sum(0) - true_positive
    iou = true_positive / union  # NaN where the class is absent from both ground truth and predictions
    class_acc = true_positive / per_true_class  # NaN where the class has no ground-truth pixel
    return {
        "miou": 100.0 * float(iou.nanmean()),
        "pixel_acc": 100.0 * float(true_positive.sum() / confusion.sum()),
        "macc": 100.0 * float(class_acc.nanmean()),
    }
