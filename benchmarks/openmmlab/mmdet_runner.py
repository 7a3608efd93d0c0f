"""`recipe=<profile>/detection task.framework=mmdet`: RetinaNet / FCOS / Mask R-CNN trained by mmdet 3.3's Runner + the sema hook.

Same data as the torchvision path (the procedural scenes from the cache, or COCO 2017 under task.data_root), same
COCO evaluation (`benchmarks.metrics.coco_eval`, through `CocoResultsMetric` below, so numbers are not rounded to
mmdet's three decimals), same lr schedule, method arguments and result.json. The models follow mmdet's
`retinanet_r50_fpn`, `fcos_r50-caffe_fpn_gn-head` and `mask-rcnn_r50_fpn` configs with the backbone depth, FPN width, anchor sizes and sampling
sizes taken from task.* (the same fields the torchvision models read). Backbones start from random weights with
trainable BatchNorm (norm=bn) unless task.backbone_weights gives an ImageNet checkpoint (then norm=frozen_bn gives
mmdet's usual frozen BN, norm_eval=True). A rerun of an interrupted run resumes from its last epoch-end checkpoint
(mmengine's resume; see common.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.openmmlab import common

TASK = "detection"  # the task this runner trains (task.framework=mmdet)
HONOURED, ACCEPTED = common.HONOURED, common.ACCEPTED  # the trainer options it follows (frameworks.py)

IMAGENET_MEAN = [123.675, 116.28, 103.53]
IMAGENET_STD = [58.395, 57.12, 57.375]
RESNET_DEPTH = {"resnet18": 18, "resnet34": 34, "resnet50": 50, "resnet101": 101}


def _backbone(task: Any, backbone: str) -> dict:
    if backbone not in RESNET_DEPTH:
        raise ValueError(f"task.framework=mmdet supports ResNet backbones ({', '.join(RESNET_DEPTH)}), got {backbone}")
    frozen = task.norm == "frozen_bn"
    if task.norm == "gn":
        norm_cfg = dict(type="GN", num_groups=32, requires_grad=True)
    else:
        norm_cfg = dict(type="BN", requires_grad=not frozen)
    init_cfg = dict(type="Pretrained", checkpoint=task.backbone_weights) if task.backbone_weights else None
    return dict(
        type="ResNet", depth=RESNET_DEPTH[backbone], num_stages=4, out_indices=(0, 1, 2, 3),
        frozen_stages=5 - task.trainable_backbone_layers - 1 if task.trainable_backbone_layers < 5 else -1,
        norm_cfg=norm_cfg, norm_eval=frozen, style="pytorch", init_cfg=init_cfg,
    )


def _in_channels(backbone: str) -> list[int]:
    return [64, 128, 256, 512] if backbone in ("resnet18", "resnet34") else [256, 512, 1024, 2048]


def model_cfg(task: Any, num_classes: int) -> dict:
    """The mmdet model config dict for task.model (retinanet_, fcos_ or maskrcnn_<resnet>_fpn)."""
    from benchmarks.tasks.detection import parse_model

    arch, backbone = parse_model(task.model)
    channels = task.fpn_channels
    smallest_anchor = (task.anchor_sizes or [32])[0]
    preprocessor = dict(type="DetDataPreprocessor", mean=IMAGENET_MEAN, std=IMAGENET_STD, bgr_to_rgb=True,
                        pad_size_divisor=32, pad_mask=arch == "maskrcnn")
    if arch == "retinanet":
        return dict(
            type="RetinaNet",
            data_preprocessor=preprocessor,
            backbone=_backbone(task, backbone),
            neck=dict(type="FPN", in_channels=_in_channels(backbone), out_channels=channels, start_level=1,
                      add_extra_convs="on_input", num_outs=5),
            bbox_head=dict(
                type="RetinaHead", num_classes=num_classes, in_channels=channels, stacked_convs=4,
                feat_channels=channels,
                # P3 has stride 8: octave_base_scale * 8 is the smallest anchor (32 in mmdet's config).
                anchor_generator=dict(type="AnchorGenerator", octave_base_scale=smallest_anchor / 8,
                                      scales_per_octave=3, ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32, 64, 128]),
                bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[1.0] * 4),
                loss_cls=dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
                loss_bbox=dict(type="L1Loss", loss_weight=1.0),
            ),
            train_cfg=dict(
                assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0,
                              ignore_iof_thr=-1),
                sampler=dict(type="PseudoSampler"), allowed_border=-1, pos_weight=-1, debug=False,
            ),
            test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=task.score_threshold,
                          nms=dict(type="nms", iou_threshold=0.5), max_per_img=task.detections_per_image),
        )
    if arch == "fcos":  # mmdet's fcos_r50-caffe_fpn_gn-head: GroupNorm head, focal + IoU + centerness losses
        return dict(
            type="FCOS",
            data_preprocessor=preprocessor,
            backbone=_backbone(task, backbone),
            neck=dict(type="FPN", in_channels=_in_channels(backbone), out_channels=channels, start_level=1,
                      add_extra_convs="on_output", num_outs=5, relu_before_extra_convs=True),
            bbox_head=dict(
                type="FCOSHead", num_classes=num_classes, in_channels=channels, stacked_convs=4,
                feat_channels=channels, strides=[8, 16, 32, 64, 128],
                norm_cfg=dict(type="GN", num_groups=32, requires_grad=True),
                loss_cls=dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
                loss_bbox=dict(type="IoULoss", loss_weight=1.0),
                loss_centerness=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0),
            ),
            train_cfg=dict(assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0,
                                         ignore_iof_thr=-1), allowed_border=-1, pos_weight=-1, debug=False),
            test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=task.score_threshold,
                          nms=dict(type="nms", iou_threshold=0.5), max_per_img=task.detections_per_image),
        )
    if arch != "maskrcnn":
        raise ValueError(f"task.framework=mmdet runs retinanet_*, fcos_* and maskrcnn_* models, got {task.model!r}")
    roi = dict(type="RoIAlign", sampling_ratio=0)
    return dict(
        type="MaskRCNN",
        data_preprocessor=preprocessor,
        backbone=_backbone(task, backbone),
        neck=dict(type="FPN", in_channels=_in_channels(backbone), out_channels=channels, num_outs=5),
        rpn_head=dict(
            type="RPNHead", in_channels=channels, feat_channels=channels,
            # P2 has stride 4: scales * 4 is the anchor size (8 * 4 = 32 in mmdet's config).
            anchor_generator=dict(type="AnchorGenerator", scales=[smallest_anchor / 4], ratios=[0.5, 1.0, 2.0],
                                  strides=[4, 8, 16, 32, 64]),
            bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[1.0] * 4),
            loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0),
            loss_bbox=dict(type="L1Loss", loss_weight=1.0),
        ),
        roi_head=dict(
            type="StandardRoIHead",
            bbox_roi_extractor=dict(type="SingleRoIExtractor", roi_layer=dict(output_size=7, **roi),
                                    out_channels=channels, featmap_strides=[4, 8, 16, 32]),
            bbox_head=dict(
                type="Shared2FCBBoxHead", in_channels=channels, fc_out_channels=1024, roi_feat_size=7,
                num_classes=num_classes,
                bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[0.1, 0.1, 0.2, 0.2]),
                reg_class_agnostic=False,
                loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
                loss_bbox=dict(type="L1Loss", loss_weight=1.0),
            ),
            mask_roi_extractor=dict(type="SingleRoIExtractor", roi_layer=dict(output_size=14, **roi),
                                    out_channels=channels, featmap_strides=[4, 8, 16, 32]),
            mask_head=dict(type="FCNMaskHead", num_convs=4, in_channels=channels, conv_out_channels=channels,
                           num_classes=num_classes,
                           loss_mask=dict(type="CrossEntropyLoss", use_mask=True, loss_weight=1.0)),
        ),
        train_cfg=dict(
            rpn=dict(
                assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3,
                              match_low_quality=True, ignore_iof_thr=-1),
                sampler=dict(type="RandomSampler", num=256, pos_fraction=0.5, neg_pos_ub=-1,
                             add_gt_as_proposals=False),
                allowed_border=-1, pos_weight=-1, debug=False,
            ),
            rpn_proposal=dict(nms_pre=task.rpn_top_n_train, max_per_img=task.rpn_top_n_train,
                              nms=dict(type="nms", iou_threshold=0.7), min_bbox_size=0),
            rcnn=dict(
                assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.5,
                              match_low_quality=True, ignore_iof_thr=-1),
                sampler=dict(type="RandomSampler", num=task.box_batch_size_per_image, pos_fraction=0.25,
                             neg_pos_ub=-1, add_gt_as_proposals=True),
                mask_size=28, pos_weight=-1, debug=False,
            ),
        ),
        test_cfg=dict(
            rpn=dict(nms_pre=task.rpn_top_n_test, max_per_img=task.rpn_top_n_test,
                     nms=dict(type="nms", iou_threshold=0.7), min_bbox_size=0),
            rcnn=dict(score_thr=task.score_threshold, nms=dict(type="nms", iou_threshold=0.5),
                      max_per_img=task.detections_per_image, mask_thr_binary=0.5),
        ),
    )


def _register_metric():
    """Register CocoResultsMetric in mmengine's METRICS once (mmdet's registry finds it through its parent)."""
    from mmengine.evaluator import BaseMetric
    from mmengine.registry import METRICS

    if "CocoResultsMetric" in METRICS.module_dict:
        return

    @METRICS.register_module()
    class CocoResultsMetric(BaseMetric):
        """COCO AP through benchmarks.metrics.coco_eval (the torchvision path's exact evaluation)."""

        def __init__(self, ann_file: str, iou_types=("bbox",), backend: str = "pycocotools", **kwargs):
            super().__init__(**kwargs)
            from benchmarks.metrics.coco_eval import _classes, _load_gt

            self.gt = _load_gt(str(ann_file), _classes(backend)[0])
            self.iou_types, self.backend = tuple(iou_types), backend

        def process(self, data_batch, data_samples) -> None:
            for sample in data_samples:
                pred = sample["pred_instances"]
                item = {"image_id": int(sample["img_id"]), "bboxes": pred["bboxes"].cpu().numpy(),
                        "scores": pred["scores"].cpu().numpy(), "labels": pred["labels"].cpu().numpy()}
                if "segm" in self.iou_types:
                    item["masks"] = pred["masks"].cpu().numpy().astype(np.uint8)
                self.results.append(item)

        def compute_metrics(self, results: list) -> dict:
            from pycocotools import mask as mask_utils

            from benchmarks.metrics.coco_eval import coco_evaluate

            by_name = {c["name"]: c["id"] for c in self.gt.dataset["categories"]}
            category_ids = [by_name[name] for name in self.dataset_meta["classes"]]
            detections = []
            for item in results:
                boxes = item["bboxes"].astype(np.float64)
                boxes[:, 2:] -= boxes[:, :2]
                rles = None
                if "masks" in item and len(item["masks"]):
                    rles = mask_utils.encode(np.asfortranarray(item["masks"].transpose(1, 2, 0)))
                for k in range(len(boxes)):
                    det = {"image_id": item["image_id"], "category_id": category_ids[int(item["labels"][k])],
                           "bbox": boxes[k].tolist(), "score": float(item["scores"][k])}
                    if rles is not None:
                        det["segmentation"] = {"size": rles[k]["size"], "counts": rles[k]["counts"].decode("ascii")}
                    detections.append(det)
            image_ids = sorted({item["image_id"] for item in results})
            return coco_evaluate(self.gt, detections, image_ids=image_ids, iou_types=self.iou_types,
                                 backend=self.backend)


def _data_sources(cfg: Any) -> tuple[dict, dict, str]:
    """(train source, val source, dataset label); a source is data_root + ann_file + image prefix + classes."""
    task = cfg.task
    if task.dataset == "procedural_coco":
        from benchmarks.data.procedural_coco import CATEGORIES, cached_scenes

        cache = common.cache_dir()
        sources = []
        for split, n in (("train", task.train_images), ("val", task.val_images)):
            scenes = cached_scenes(cache, split, n, task.image_size, task.data_seed, max_objects=task.max_objects)
            sources.append(dict(data_root=str(scenes.root), ann_file="instances.json", img="images/",
                                classes=tuple(c["name"] for c in CATEGORIES)))
        return sources[0], sources[1], "procedural_coco (offline)"
    import json

    from benchmarks.data.coco import coco2017_paths

    out = []
    for split in ("train", "val"):
        image_dir, ann_file = coco2017_paths(task.data_root, split)
        root = image_dir.parent
        out.append(dict(data_root=str(root), ann_file=str(ann_file.relative_to(root)), img=f"{image_dir.name}/"))
    # The classes are the training annotations' categories in id order, as the torchvision path numbers them (for
    # COCO 2017 these are mmdet's own 80 names in the same order; a COCO-format subset keeps just its own).
    categories = json.loads((Path(out[0]["data_root"]) / out[0]["ann_file"]).read_text())["categories"]
    classes = tuple(c["name"] for c in sorted(categories, key=lambda c: c["id"]))
    for source in out:
        source["classes"] = classes
    return out[0], out[1], "coco2017"


def _dataset(source: dict, pipeline: list, train: bool, max_images) -> dict:
    dataset = dict(type="CocoDataset", data_root=source["data_root"], ann_file=source["ann_file"],
                   data_prefix=dict(img=source["img"]), pipeline=pipeline, test_mode=not train,
                   filter_cfg=dict(filter_empty_gt=True, min_size=1) if train else None, backend_args=None)
    dataset["metainfo"] = dict(classes=source["classes"])
    if max_images is not None:
        dataset["indices"] = int(max_images)  # the first N images, as the torchvision path's max_*_samples
    return dataset


def run_mmdet(cfg: Any, run_dir: Path) -> dict:
    """Train and evaluate one run through mmdet; returns (and writes) the result.json record."""
    common.require("mmcv", "mmdet")
    from benchmarks.tasks.detection import input_sizes, parse_model

    task = cfg.task
    arch, _ = parse_model(task.model)
    masks = arch == "maskrcnn"
    train_source, val_source, dataset_label = _data_sources(cfg)
    notes = ["trained by mmdet's Runner with sema.integrations.mmengine.SwitchEMAHook (framework=mmdet)"]
    if task.backbone_weights is None:
        notes.append("backbone randomly initialised (the paper starts from ImageNet weights)")
    if task.dataset == "procedural_coco":
        notes.append("dataset: procedural COCO-format scenes (offline stand-in for COCO 2017)")
    result = common.base_result(cfg, "bbox_ap", True, dataset_label, notes)

    def train(resume_from):
        import mmdet  # noqa: F401  (registers mmdet's modules)
        from mmdet.utils import register_all_modules
        from mmengine.config import ConfigDict
        from mmengine.runner import Runner

        import sema.integrations.mmengine  # noqa: F401  (registers SwitchEMAHook)

        register_all_modules(init_default_scope=True)
        _register_metric()
        min_size, max_size = input_sizes(task)
        train_pipeline = [
            dict(type="LoadImageFromFile"),
            dict(type="LoadAnnotations", with_bbox=True, with_mask=masks),
            dict(type="Resize", scale=(max_size, min_size), keep_ratio=True),
            dict(type="RandomFlip", prob=task.hflip),
            dict(type="PackDetInputs"),
        ]
        val_pipeline = [
            dict(type="LoadImageFromFile"),
            dict(type="Resize", scale=(max_size, min_size), keep_ratio=True),
            dict(type="PackDetInputs", meta_keys=("img_id", "img_path", "ori_shape", "img_shape", "scale_factor")),
        ]
        max_train = task.max_train_samples
        if cfg.trainer.max_steps_per_epoch:
            cap = cfg.trainer.max_steps_per_epoch * task.batch_size
            max_train = cap if max_train is None else min(max_train, cap)
        train_dataset = _dataset(train_source, train_pipeline, True, max_train)
        loader = dict(num_workers=task.num_workers, persistent_workers=task.num_workers > 0)
        train_dataloader = dict(batch_size=task.batch_size, sampler=dict(type="DefaultSampler", shuffle=True),
                                batch_sampler=dict(type="AspectRatioBatchSampler", drop_last=True),
                                dataset=train_dataset, **loader)
        val_dataloader = dict(batch_size=task.eval_batch_size, drop_last=False,
                              sampler=dict(type="DefaultSampler", shuffle=False),
                              dataset=_dataset(val_source, val_pipeline, False, task.max_eval_samples), **loader)
        val_evaluator = dict(type="CocoResultsMetric", ann_file=str(Path(val_source["data_root"]) /
                                                                     val_source["ann_file"]),
                             iou_types=("bbox", "segm") if masks else ("bbox",), backend=task.eval_backend)

        n_train = _train_length(train_dataset)
        steps_per_epoch = n_train // task.batch_size
        if steps_per_epoch == 0:
            raise ValueError(f"the training set ({n_train} images) is smaller than one batch "
                             f"(task.batch_size={task.batch_size})")
        total_steps = steps_per_epoch * cfg.trainer.epochs
        sema_hook, lr_hook, recorder = common.make_hooks(cfg, steps_per_epoch, total_steps, result,
                                                         Path(run_dir) / "result.json")
        num_classes = len(train_source["classes"])
        runner = Runner(
            model=ConfigDict(model_cfg(task, num_classes)),  # attribute access (cfg.min_bbox_size) needs it
            train_dataloader=train_dataloader, val_dataloader=val_dataloader, val_evaluator=val_evaluator,
            optim_wrapper=common.optim_wrapper_cfg(cfg.optim, cfg.trainer.grad_clip, task.batch_size),
            default_scope="mmdet",
            **common.runner_kwargs(cfg, Path(run_dir), cfg.trainer.epochs, [sema_hook, lr_hook, recorder],
                                   resume_from),
        )
        return common.fit(runner, sema_hook)

    return common.execute(Path(run_dir), result, train)


def _train_length(dataset_cfg: dict) -> int:
    """Images the training loader will see: the capped count, or all images of the json with an annotation."""
    import json

    with open(Path(dataset_cfg["data_root"]) / dataset_cfg["ann_file"]) as f:
        coco = json.load(f)
    annotated = {a["image_id"] for a in coco["annotations"] if not a.get("iscrowd", 0)}
    n = sum(1 for im in coco["images"] if im["id"] in annotated)
    return min(n, dataset_cfg.get("indices", n))


def run(cfg: Any, run_dir: Path) -> dict:
    """The framework-runner entry point (benchmarks/frameworks.py): the task's own checks, then run_mmdet."""
    from benchmarks.tasks.detection import check_config

    check_config(cfg.task)  # the same checks as the torchvision path
    return run_mmdet(cfg, Path(run_dir))
