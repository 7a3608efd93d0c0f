"""COCO detection metrics through the reference COCOeval (pycocotools) or its faster port (faster-coco-eval).

`coco_evaluate(gt, detections)` returns flat, JSON-ready metrics:

    bbox_ap (AP@[.50:.95], the headline), ap50, ap75, ap_small, ap_medium, ap_large, ar100
    mask_ap, mask_ap50, mask_ap75                       only when the detections carry "segmentation"

Detections use the COCO results format: {"image_id", "category_id", "bbox": [x, y, w, h], "score"} and, for masks,
"segmentation" as a compressed RLE. Size-range entries are left out when the ground truth has no object of that size
(COCOeval reports -1 there). No detections at all gives zeros (COCO's loadRes cannot take an empty list).
"""

from __future__ import annotations

import contextlib
import copy
import io
from typing import Iterable, Optional, Sequence

BACKENDS = ("pycocotools", "faster_coco_eval")

# Positions in COCOeval.stats (see COCOeval.summarize) and the names this project reports them under.
_BBOX_STATS = {"bbox_ap": 0, "ap50": 1, "ap75": 2, "ap_small": 3, "ap_medium": 4, "ap_large": 5, "ar100": 8}
_MASK_STATS = {"mask_ap": 0, "mask_ap50": 1, "mask_ap75": 2}
# COCO's object size ranges by area (pixels): small < 32^2 <= medium < 96^2 <= large.
_SIZE_RANGES = {"ap_small": "small", "ap_medium": "medium", "ap_large": "large"}


def coco_evaluate(
    gt,
    detections: Sequence[dict],
    image_ids: Optional[Iterable[int]] = None,
    iou_types: Optional[Sequence[str]] = None,
    backend: str = "pycocotools",
) -> dict[str, float]:
    """COCO AP of `detections` against `gt` (a COCO annotation dict, a json path, or a loaded COCO object).

    image_ids: evaluate only these images (e.g. the first `max_eval_samples`); None = every image in `gt`.
    iou_types: subset of ("bbox", "segm"); None = "bbox", plus "segm" when the detections carry masks.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown COCO eval backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    detections = list(detections)
    has_masks = bool(detections) and all("segmentation" in d for d in detections)
    if iou_types is None:
        iou_types = ("bbox", "segm") if has_masks else ("bbox",)
    for iou_type in iou_types:
        if iou_type not in ("bbox", "segm"):
            raise ValueError(f"unknown iou_type {iou_type!r}; allowed: bbox, segm")
    if "segm" in iou_types and detections and not has_masks:
        raise ValueError("iou_type 'segm' needs a 'segmentation' (RLE) in every detection")

    coco_cls, eval_cls = _classes(backend)
    coco_gt = _load_gt(gt, coco_cls)
    ids = sorted(coco_gt.getImgIds()) if image_ids is None else sorted(set(int(i) for i in image_ids))
    metrics: dict[str, float] = {}
    for iou_type in iou_types:
        names = _BBOX_STATS if iou_type == "bbox" else _MASK_STATS
        if not detections:  # zeros, with the same keys COCOeval would give (no size range without ground truth)
            present = _size_ranges_present(coco_gt, ids)
            metrics.update({name: 0.0 for name in names if name not in _SIZE_RANGES or _SIZE_RANGES[name] in present})
            continue
        with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints its progress and table
            coco_dt = coco_gt.loadRes(copy.deepcopy(detections))  # loadRes mutates the dicts (adds area, id)
            evaluator = eval_cls(coco_gt, coco_dt, iou_type)
            evaluator.params.imgIds = ids
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        for name, index in names.items():
            value = float(evaluator.stats[index])
            if value >= 0:  # -1 means "no ground truth in this range"
                metrics[name] = value
    return metrics


def _size_ranges_present(coco_gt, image_ids: list[int]) -> set[str]:
    """Which of COCO's size ranges have a non-crowd ground-truth object in `image_ids`."""
    present = set()
    for ann in coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=image_ids, iscrowd=False)):
        area = ann["area"]
        present.add("small" if area < 32**2 else "medium" if area < 96**2 else "large")
    return present


def _classes(backend: str):
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, COCOeval
    from faster_coco_eval import COCO, COCOeval_faster

    return COCO, COCOeval_faster


def _load_gt(gt, coco_cls):
    """A COCO object of `coco_cls` from a dict, a path, or a COCO object of either backend."""
    if hasattr(gt, "dataset") and hasattr(gt, "getImgIds"):
        if isinstance(gt, coco_cls):
            return gt
        gt = gt.dataset
    coco = coco_cls()
    if isinstance(gt, dict):
        coco.dataset = copy.deepcopy(gt)
    else:
        import json

        with open(gt) as f:
            coco.dataset = json.load(f)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco
