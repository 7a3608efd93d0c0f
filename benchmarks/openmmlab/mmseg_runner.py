"""`recipe=<profile>/segmentation task.framework=mmseg`: FCN / DeepLabV3 (ResNetV1c, output stride 8) trained by mmseg 1.2's
Runner with the sema hook, on the segmentation task's data (procedural scenes' semantic maps, or ADE20K).

Models (`task.model`): `fcn_<backbone>` or `deeplabv3_<backbone>` with backbone resnet18 | resnet50 | resnet101
(mmseg's fcn_r*-d8 / deeplabv3_r*-d8 configs, random init). Images and ground truth are resized to
task.input_size x task.input_size for training and, with task.eval_mode=resize, for evaluation; task.eval_mode=slide
evaluates as mmseg's ADE20K configs do (shorter side to task.eval_crop, sliding windows, metrics at the annotation's
own size), as in the torchvision path. The metrics
(miou headline, pixel_acc, macc, percent) come from the same confusion-matrix code
(`benchmarks.metrics.segmentation`) through `ConfusionMetric` below. A rerun of an interrupted run resumes from its
last epoch-end checkpoint (mmengine's resume; see common.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.openmmlab import common

TASK = "segmentation"  # the task this runner trains (task.framework=mmseg)
HONOURED, ACCEPTED = common.HONOURED, common.ACCEPTED  # the trainer options it follows (frameworks.py)

HEADS = ("fcn", "deeplabv3")
DEPTHS = {"resnet18": 18, "resnet50": 50, "resnet101": 101}
IGNORE_INDEX = 255


def parse_model(name: str) -> tuple[str, str]:
    """'fcn_resnet18' -> ('fcn', 'resnet18'); a clear error for anything else."""
    head, _, backbone = name.partition("_")
    if head not in HEADS or backbone not in DEPTHS:
        raise ValueError(
            f"task.model={name!r} is not available with task.framework=mmseg; use <head>_<backbone> with head in "
            f"{', '.join(HEADS)} and backbone in {', '.join(DEPTHS)} (e.g. fcn_resnet18, deeplabv3_resnet50)"
        )
    return head, backbone


def model_cfg(task: Any, num_classes: int) -> dict:
    """The mmseg EncoderDecoder config for task.model; task.eval_mode=slide gives mmseg's sliding-window test."""
    from benchmarks.tasks.segmentation import slide_window

    head, backbone = parse_model(task.model)
    if getattr(task, "eval_mode", "resize") == "slide":
        crop, stride = slide_window(task)
        test_cfg = dict(mode="slide", crop_size=(crop, crop), stride=(stride, stride))
    else:
        test_cfg = dict(mode="whole")
    depth = DEPTHS[backbone]
    norm = dict(type="BN", requires_grad=True)
    last = 512 if depth == 18 else 2048
    channels = 128 if depth == 18 else 512
    common_head = dict(in_channels=last, in_index=3, channels=channels, dropout_ratio=0.1, num_classes=num_classes,
                       norm_cfg=norm, align_corners=False,
                       loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0))
    if head == "fcn":
        decode_head = dict(type="FCNHead", num_convs=2, concat_input=True, **common_head)
    else:
        decode_head = dict(type="ASPPHead", dilations=(1, 12, 24, 36), **common_head)
    return dict(
        type="EncoderDecoder",
        data_preprocessor=dict(type="SegDataPreProcessor", mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0, seg_pad_val=IGNORE_INDEX,
                               size=(task.input_size, task.input_size)),
        backbone=dict(type="ResNetV1c", depth=depth, num_stages=4, out_indices=(0, 1, 2, 3),
                      dilations=(1, 1, 2, 4), strides=(1, 2, 1, 1), norm_cfg=norm, norm_eval=False,
                      style="pytorch", contract_dilation=True),
        decode_head=decode_head,
        train_cfg=dict(),
        test_cfg=test_cfg,
    )


def _register_metric():
    from mmengine.evaluator import BaseMetric
    from mmengine.registry import METRICS

    if "ConfusionMetric" in METRICS.module_dict:
        return

    @METRICS.register_module()
    class ConfusionMetric(BaseMetric):
        """miou / pixel_acc / macc from one confusion matrix over the evaluation set (the torchvision path's code)."""

        def __init__(self, num_classes: int, **kwargs):
            super().__init__(**kwargs)
            self.num_classes = num_classes

        def process(self, data_batch, data_samples) -> None:
            import torch.nn.functional as F

            from benchmarks.metrics.segmentation import confusion_matrix

            for sample in data_samples:
                pred = sample["pred_sem_seg"]["data"].squeeze(0).cpu()
                target = sample["gt_sem_seg"]["data"].squeeze(0).cpu()
                if pred.shape != target.shape:  # mmseg predicts at the original size; compare at the target's
                    pred = F.interpolate(pred[None, None].float(), size=target.shape, mode="nearest")[0, 0].long()
                self.results.append(confusion_matrix(pred, target, self.num_classes, IGNORE_INDEX))

        def compute_metrics(self, results: list) -> dict:
            from benchmarks.metrics.segmentation import segmentation_scores

            return segmentation_scores(sum(results))


def _data_sources(cfg: Any) -> tuple[dict, dict, int, str]:
    """(train source, val source, number of classes, dataset label)."""
    task = cfg.task
    if task.dataset == "procedural_coco":
        from benchmarks.data.procedural_coco import CLASS_NAMES, cached_scenes

        sources = []
        for split, n in (("train", task.train_images), ("val", task.val_images)):
            scenes = cached_scenes(common.cache_dir(), split, n, task.image_size, task.data_seed,
                                   max_objects=task.max_objects)
            sources.append(dict(type="BaseSegDataset", data_root=str(scenes.root),
                                data_prefix=dict(img_path="images", seg_map_path="semantic"),
                                img_suffix=".png", seg_map_suffix=".png", reduce_zero_label=False,
                                metainfo=dict(classes=tuple(CLASS_NAMES))))
        return sources[0], sources[1], len(CLASS_NAMES), "procedural_coco-semantic (offline)"
    if task.dataset == "ade20k":
        from benchmarks.data import ade20k

        image, _ = ade20k.ade20k_pairs(task.data_root, "train")[0]
        root = image.parents[2]  # <root>/images/training/x.jpg
        sources = [dict(type="ADE20KDataset", data_root=str(root), reduce_zero_label=True,
                        data_prefix=dict(img_path=f"images/{s}", seg_map_path=f"annotations/{s}"))
                   for s in ("training", "validation")]
        return sources[0], sources[1], ade20k.NUM_CLASSES, "ade20k"
    raise ValueError(f"task.dataset={task.dataset!r} is not available with task.framework=mmseg; "
                     "choose one of: procedural_coco, ade20k")


def run_mmseg(cfg: Any, run_dir: Path) -> dict:
    """Train and evaluate one segmentation run through mmseg; returns (and writes) the result.json record."""
    common.require("mmcv", "mmseg")
    task = cfg.task
    parse_model(task.model)
    train_source, val_source, num_classes, dataset_label = _data_sources(cfg)
    notes = ["trained by mmseg's Runner with sema.integrations.mmengine.SwitchEMAHook (framework=mmseg)",
             f"{task.model} from scratch at {task.input_size}x{task.input_size}; metrics "
             + ("by sliding window at the annotations' own size" if getattr(task, "eval_mode", "resize") == "slide"
                else "at that size")]
    result = common.base_result(cfg, "miou", True, dataset_label, notes)

    def train(resume_from):
        import mmseg  # noqa: F401
        from mmengine.config import ConfigDict
        from mmengine.runner import Runner
        from mmseg.utils import register_all_modules

        from benchmarks.tasks.segmentation import slide_window
        import sema.integrations.mmengine  # noqa: F401  (registers SwitchEMAHook)

        register_all_modules(init_default_scope=True)
        _register_metric()
        size = (task.input_size, task.input_size)
        train_pipeline = [
            dict(type="LoadImageFromFile"),
            dict(type="LoadAnnotations"),  # reduce_zero_label comes from the dataset
            dict(type="Resize", scale=size, keep_ratio=False),
            dict(type="RandomFlip", prob=0.5),
            dict(type="PackSegInputs"),
        ]
        slide = getattr(task, "eval_mode", "resize") == "slide"
        if slide:  # mmseg's ADE20K test: shorter side to the crop (longer side <= 4x); annotations loaded after
            crop, _ = slide_window(task)  # the resize keep their own size, where the metric is computed
            val_pipeline = [dict(type="LoadImageFromFile"),
                            dict(type="Resize", scale=(4 * crop, crop), keep_ratio=True),
                            dict(type="LoadAnnotations"), dict(type="PackSegInputs")]
        else:
            val_pipeline = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"),
                            dict(type="Resize", scale=size, keep_ratio=False), dict(type="PackSegInputs")]
        max_train = task.max_train_samples
        if cfg.trainer.max_steps_per_epoch:
            cap = cfg.trainer.max_steps_per_epoch * task.batch_size
            max_train = cap if max_train is None else min(max_train, cap)
        train_dataset = dict(train_source, pipeline=train_pipeline)
        val_dataset = dict(val_source, pipeline=val_pipeline)
        if max_train is not None:
            train_dataset["indices"] = int(max_train)
        if task.max_eval_samples is not None:
            val_dataset["indices"] = int(task.max_eval_samples)
        loader = dict(num_workers=task.num_workers, persistent_workers=task.num_workers > 0)
        train_dataloader = dict(batch_size=task.batch_size, drop_last=True,
                                sampler=dict(type="DefaultSampler", shuffle=True), dataset=train_dataset, **loader)
        # Slide mode: images of different sizes are not stacked into one batch.
        val_dataloader = dict(batch_size=1 if slide else task.eval_batch_size, sampler=dict(type="DefaultSampler", shuffle=False),
                              dataset=val_dataset, **loader)

        n_train = _count_images(train_source, max_train)
        steps_per_epoch = n_train // task.batch_size
        if steps_per_epoch == 0:
            raise ValueError(f"the training set ({n_train} images) is smaller than one batch "
                             f"(task.batch_size={task.batch_size})")
        sema_hook, lr_hook, recorder = common.make_hooks(cfg, steps_per_epoch, steps_per_epoch * cfg.trainer.epochs,
                                                         result, Path(run_dir) / "result.json")
        runner = Runner(
            model=ConfigDict(model_cfg(task, num_classes)),  # attribute access (cfg.min_bbox_size) needs it
            train_dataloader=train_dataloader, val_dataloader=val_dataloader,
            val_evaluator=dict(type="ConfusionMetric", num_classes=num_classes),
            optim_wrapper=common.optim_wrapper_cfg(cfg.optim, cfg.trainer.grad_clip, task.batch_size),
            default_scope="mmseg",
            **common.runner_kwargs(cfg, Path(run_dir), cfg.trainer.epochs, [sema_hook, lr_hook, recorder],
                                   resume_from),
        )
        return common.fit(runner, sema_hook)

    return common.execute(Path(run_dir), result, train)


def _count_images(source: dict, cap) -> int:
    folder = Path(source["data_root"]) / source["data_prefix"]["img_path"]
    n = sum(1 for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    return n if cap is None else min(n, int(cap))


def run(cfg: Any, run_dir: Path) -> dict:
    """The framework-runner entry point (benchmarks/frameworks.py): the task's own checks, then run_mmseg."""
    from benchmarks.tasks.segmentation import slide_window

    slide_window(cfg.task)  # the same checks as the torchvision path
    return run_mmseg(cfg, Path(run_dir))
