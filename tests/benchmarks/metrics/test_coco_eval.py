"""COCOeval wrapper on hand-made cases whose AP is worked out by hand, and parity of the two backends."""

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from benchmarks.metrics.coco_eval import coco_evaluate


def _rle(box, size=64):
    """Compressed RLE (json-ready) of a filled integer box [x, y, w, h] on a size x size image."""
    x, y, w, h = box
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[y:y + h, x:x + w] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _gt(boxes, category_ids=None):
    category_ids = category_ids or [1] * len(boxes)
    return {
        "images": [{"id": 1, "file_name": "a.png", "height": 64, "width": 64}],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        "annotations": [
            {"id": i + 1, "image_id": 1, "category_id": c, "bbox": list(map(float, b)), "area": float(b[2] * b[3]),
             "iscrowd": 0, "segmentation": _rle(b)}
            for i, (b, c) in enumerate(zip(boxes, category_ids))
        ],
    }


def _det(box, score, category_id=1, with_mask=True):
    d = {"image_id": 1, "category_id": category_id, "bbox": list(map(float, box)), "score": score}
    if with_mask:
        d["segmentation"] = _rle(box)
    return d


def test_perfect_detections_give_ap_one():
    boxes = [[2, 2, 20, 20], [30, 30, 20, 20], [5, 40, 12, 12]]
    gt = _gt(boxes, [1, 2, 1])
    dets = [_det(b, 0.9, c) for b, c in zip(boxes, [1, 2, 1])]
    metrics = coco_evaluate(gt, dets)
    for name in ("bbox_ap", "ap50", "ap75", "mask_ap", "mask_ap50", "mask_ap75"):
        assert metrics[name] == pytest.approx(1.0), name


def test_false_positive_ranked_between_two_hits_gives_the_hand_computed_ap():
    # Ranked detections: hit (P=1, R=.5), miss (P=.5, R=.5), hit (P=2/3, R=1). COCO's interpolated precision is
    # 1 at the 51 recall points 0..0.50 and 2/3 at the 50 points 0.51..1.00, at every IoU threshold (exact hits):
    expected = (51 * 1.0 + 50 * 2 / 3) / 101
    gt = _gt([[0, 0, 10, 10], [30, 30, 10, 10]])
    dets = [_det([0, 0, 10, 10], 0.9), _det([50, 0, 10, 10], 0.8), _det([30, 30, 10, 10], 0.7)]
    metrics = coco_evaluate(gt, dets)
    for name in ("bbox_ap", "ap50", "ap75", "mask_ap"):
        assert metrics[name] == pytest.approx(expected, abs=1e-12), name


def test_partial_overlap_counts_only_at_the_iou_thresholds_it_passes():
    # IoU = (10 * 7.2) / (10 * 10) = 0.72: a hit at thresholds .50 .55 .60 .65 .70, a miss at .75 ... .95.
    gt = _gt([[0, 0, 10, 10]])
    metrics = coco_evaluate(gt, [_det([0, 0, 10, 7.2], 0.9, with_mask=False)])
    assert metrics["bbox_ap"] == pytest.approx(0.5)
    assert metrics["ap50"] == pytest.approx(1.0)
    assert metrics["ap75"] == pytest.approx(0.0)
    assert "mask_ap" not in metrics
    assert "ap_medium" not in metrics and "ap_large" not in metrics  # no ground truth of those sizes (-1)
    assert metrics["ap_small"] == pytest.approx(0.5)


def test_wrong_class_and_no_detections_give_zero():
    gt = _gt([[0, 0, 10, 10]])
    assert coco_evaluate(gt, [_det([0, 0, 10, 10], 0.9, category_id=2)])["bbox_ap"] == 0.0
    # No detections: zeros under the keys COCOeval gives when it has detections (no medium/large objects here).
    assert coco_evaluate(gt, [], iou_types=("bbox", "segm")) == pytest.approx(
        {"bbox_ap": 0, "ap50": 0, "ap75": 0, "ap_small": 0, "ar100": 0, "mask_ap": 0, "mask_ap50": 0, "mask_ap75": 0}
    )
    assert set(coco_evaluate(gt, [_det([50, 50, 10, 10], 0.9, with_mask=False)])) == set(coco_evaluate(gt, []))


def test_image_subset_and_backend_parity():
    gt = _gt([[0, 0, 10, 10], [30, 30, 10, 10]])
    gt["images"].append({"id": 2, "file_name": "b.png", "height": 64, "width": 64})
    gt["annotations"].append(
        {"id": 3, "image_id": 2, "category_id": 1, "bbox": [5.0, 5.0, 20.0, 20.0], "area": 400.0, "iscrowd": 0,
         "segmentation": _rle([5, 5, 20, 20])}
    )
    dets = [_det([0, 0, 10, 10], 0.9), _det([50, 0, 10, 10], 0.8), _det([31, 30, 10, 11], 0.7)]
    dets.append({**_det([6, 5, 20, 18], 0.6), "image_id": 2})
    only_first = coco_evaluate(gt, [d for d in dets if d["image_id"] == 1], image_ids=[1])
    assert only_first == coco_evaluate(gt, dets, image_ids=[1])
    assert coco_evaluate(gt, dets)["bbox_ap"] != only_first["bbox_ap"]
    reference = coco_evaluate(gt, dets, backend="pycocotools")
    faster = coco_evaluate(gt, dets, backend="faster_coco_eval")
    assert faster == pytest.approx(reference, abs=1e-9)


def test_bad_arguments_are_refused():
    gt = _gt([[0, 0, 10, 10]])
    with pytest.raises(ValueError, match="backend"):
        coco_evaluate(gt, [], backend="detectron")
    with pytest.raises(ValueError, match="iou_type"):
        coco_evaluate(gt, [], iou_types=("keypoints",))
    with pytest.raises(ValueError, match="segmentation"):
        coco_evaluate(gt, [_det([0, 0, 10, 10], 0.9, with_mask=False)], iou_types=("segm",))
