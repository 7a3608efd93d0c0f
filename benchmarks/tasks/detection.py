"""Object detection and instance segmentation: procedural COCO scenes (embedded default) or COCO 2017.

    sema-bench recipe=quick/detection method=sema           # procedural scenes, FCOS-R18-FPN, CPU
    sema-bench recipe=paper/detection method=sema           # COCO 2017, Mask R-CNN R50-FPN, 1x schedule (GPU)
    sema-bench recipe=quick/detection task.framework=mmdet method=sema   # the same through mmdet's Runner

Datasets (`task.dataset`): `procedural_coco` (generated once into the cache: shapes and Fashion-MNIST garments on
textured backgrounds, exact masks; see benchmarks/data/procedural_coco.py) and `coco2017` (`task.data_root` holding
train2017/, val2017/, annotations/). Both go through the same reader (benchmarks/data/coco.py) and COCOeval.
Models (`task.model`, torchvision, randomly initialised unless `task.backbone_weights` names a local file):
`<arch>_<backbone>_fpn` with arch in retinanet | fcos | fasterrcnn | maskrcnn and backbone in resnet18 | resnet34 |
resnet50 | resnet101 | mobilenet_v3 (mobilenet_v3 with fasterrcnn/maskrcnn only).
Metrics: COCO bbox AP@[.50:.95] (headline "bbox_ap"), ap50, ap75, AP by size, AR@100; mask_ap (+50/75) for Mask R-CNN.

`task.framework=mmdet` does not go through `setup`: the engine calls `run(cfg, run_dir)` below, which trains the
same model (retinanet_* / fcos_* / maskrcnn_* with ResNet backbones) with mmdet on the same data and returns the
same result record.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from benchmarks.tasks.protocol import RunContext, TaskConfig, TaskSetup

DATASETS = ("procedural_coco", "coco2017")
FRAMEWORKS = ("torchvision", "mmdet")
ARCHS = ("retinanet", "fcos", "fasterrcnn", "maskrcnn")
BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "mobilenet_v3")
NORMS = ("bn", "gn", "frozen_bn")
EVAL_BACKENDS = ("pycocotools", "faster_coco_eval")


@dataclass
class Config(TaskConfig):
    """Object detection / instance segmentation."""

    name: str = "detection"
    dataset: str = "procedural_coco"  # procedural_coco | coco2017
    model: str = "retinanet_resnet18_fpn"  # <retinanet|fcos|fasterrcnn|maskrcnn>_<backbone>_fpn (see module doc)
    batch_size: int = 4  # images per training step and process (paper: 2 per GPU x 8 GPUs = 16)
    eval_batch_size: int = 8  # images per evaluation forward
    framework: str = "torchvision"  # torchvision (the engine's loop) | mmdet (mmdet's Runner + the sema hook)
    image_size: int = 128  # procedural_coco: side of the generated square images
    train_images: int = 512  # procedural_coco: training scenes generated (max_train_samples may use fewer)
    val_images: int = 128  # procedural_coco: validation scenes generated (max_eval_samples may use fewer)
    max_objects: int = 4  # procedural_coco: objects per scene, 1..max_objects
    data_seed: int = 0  # procedural_coco: seed of the scenes, fixed so every run seed and method sees the same data
    min_size: Optional[int] = None  # detector input: shorter side; null = image_size (procedural) or 800 (COCO)
    max_size: Optional[int] = None  # detector input: longer side cap; null = image_size (procedural) or 1333 (COCO)
    hflip: float = 0.5  # probability of a horizontal flip per training image
    norm: str = "bn"  # backbone normalisation: bn (trainable, needed from scratch) | gn | frozen_bn (with weights)
    fpn_channels: int = 256  # FPN width for ResNet backbones (256 as in the paper; 64-128 keeps CPU runs fast)
    anchor_sizes: Optional[list[int]] = None  # anchor size per FPN level, smallest first; null = 32..512
    #                                           (procedural 128 px scenes: 16..256 fits their 10-60 px objects)
    backbone_weights: Optional[str] = None  # local file with an ImageNet state_dict of the torchvision backbone
    #                                         (e.g. resnet50-0676ba61.pth); null = random init (nothing downloads)
    trainable_backbone_layers: int = 5  # ResNet stages trained (0..5, torchvision's meaning); 5 = all
    box_batch_size_per_image: int = 512  # Faster/Mask R-CNN: RoIs sampled per image (128 halves a CPU step)
    rpn_top_n_train: int = 2000  # Faster/Mask R-CNN: proposals kept before and after NMS in training
    rpn_top_n_test: int = 1000  # Faster/Mask R-CNN: proposals kept before and after NMS at evaluation
    detections_per_image: int = 100  # COCO's maxDets
    score_threshold: float = 0.05  # detections below this score are dropped before COCOeval
    eval_backend: str = "pycocotools"  # pycocotools | faster_coco_eval (same numbers, faster on big sets)


def parse_model(name: str) -> tuple[str, str]:
    """'maskrcnn_resnet18_fpn' -> ('maskrcnn', 'resnet18'); a clear error for anything else."""
    allowed = (
        f"<arch>_<backbone>_fpn with arch in {', '.join(ARCHS)} and backbone in {', '.join(BACKBONES)} "
        "(mobilenet_v3 with fasterrcnn/maskrcnn only), e.g. retinanet_resnet18_fpn, maskrcnn_resnet50_fpn"
    )
    parts = name.split("_")
    if len(parts) < 3 or parts[-1] != "fpn" or parts[0] not in ARCHS or "_".join(parts[1:-1]) not in BACKBONES:
        raise ValueError(f"task.model={name!r} is not allowed; use {allowed}")
    arch, backbone = parts[0], "_".join(parts[1:-1])
    if backbone == "mobilenet_v3" and arch not in ("fasterrcnn", "maskrcnn"):
        raise ValueError(f"task.model={name!r} is not allowed; use {allowed}")
    return arch, backbone


def check_config(cfg: Config) -> None:
    """Reject unknown choices with the allowed ones (shared by both frameworks)."""
    for key, value, allowed in (
        ("dataset", cfg.dataset, DATASETS), ("framework", cfg.framework, FRAMEWORKS), ("norm", cfg.norm, NORMS),
        ("eval_backend", cfg.eval_backend, EVAL_BACKENDS),
    ):
        if value not in allowed:
            raise ValueError(f"task.{key}={value!r} is not allowed; choose one of: {', '.join(allowed)}")
    parse_model(cfg.model)
    if not 0 <= cfg.trainable_backbone_layers <= 5:
        raise ValueError(f"task.trainable_backbone_layers must be 0..5, got {cfg.trainable_backbone_layers}")
    if cfg.norm == "frozen_bn" and not cfg.backbone_weights:
        raise ValueError(
            "task.norm=frozen_bn needs task.backbone_weights=/path/to/imagenet_backbone.pth (frozen random BatchNorm "
            "cannot train); for a from-scratch run use task.norm=bn task.trainable_backbone_layers=5"
        )
    if cfg.anchor_sizes is not None and len(cfg.anchor_sizes) != 5:
        raise ValueError(f"task.anchor_sizes needs one size per FPN level (5), got {list(cfg.anchor_sizes)}")


# ----------------------------------------------------------------------------------------------------- data
def build_datasets(cfg: Config, cache_dir: Path):
    """(train set, eval set) as `benchmarks.data.coco.CocoInstances`."""
    from benchmarks.data import coco

    arch, _ = parse_model(cfg.model)
    masks = arch == "maskrcnn"
    train_kwargs = dict(with_masks=masks, max_images=cfg.max_train_samples, skip_empty=True, hflip_prob=cfg.hflip)
    eval_kwargs = dict(with_masks=False, max_images=cfg.max_eval_samples)  # COCOeval reads masks from the json
    if cfg.dataset == "procedural_coco":
        common = dict(image_size=cfg.image_size, seed=cfg.data_seed, max_objects=cfg.max_objects)
        train = coco.procedural_split(cache_dir, "train", cfg.train_images, **common, **train_kwargs)
        val = coco.procedural_split(cache_dir, "val", cfg.val_images, **common, **eval_kwargs)
    else:
        train = coco.coco2017_split(cfg.data_root, "train", **train_kwargs)
        val = coco.coco2017_split(cfg.data_root, "val", **eval_kwargs)
    return train, val


def input_sizes(cfg: Config) -> tuple[int, int]:
    """(min_size, max_size) of the detector's resize: the native size for procedural scenes, 800/1333 for COCO."""
    if cfg.dataset == "procedural_coco":
        return cfg.min_size or cfg.image_size, cfg.max_size or cfg.image_size
    return cfg.min_size or 800, cfg.max_size or 1333


# --------------------------------------------------------------------------------------------------- models
def _norm_layer(norm: str):
    from torchvision.ops.misc import FrozenBatchNorm2d

    if norm == "bn":
        return nn.BatchNorm2d
    if norm == "frozen_bn":
        return FrozenBatchNorm2d
    return lambda channels: nn.GroupNorm(32, channels)


def _resnet_fpn(cfg: Config, backbone: str, arch: str) -> nn.Module:
    """torchvision ResNet + FPN. RetinaNet/FCOS: C3-C5 + P6/P7 (as torchvision); R-CNNs: C2-C5 + max-pool level."""
    import torchvision
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

    body = getattr(torchvision.models, backbone)(weights=None, norm_layer=_norm_layer(cfg.norm))
    if cfg.backbone_weights:
        state = torch.load(cfg.backbone_weights, map_location="cpu", weights_only=True)
        body.load_state_dict(state)  # strict: a file for another backbone fails here, naming the keys
    stages = ["layer4", "layer3", "layer2", "layer1", "conv1"][: cfg.trainable_backbone_layers]
    if cfg.trainable_backbone_layers == 5:
        stages.append("bn1")
    for name, param in body.named_parameters():
        param.requires_grad_(any(name.startswith(stage) for stage in stages))
    widths = [64, 128, 256, 512] if backbone in ("resnet18", "resnet34") else [256, 512, 1024, 2048]
    if arch in ("retinanet", "fcos"):
        returned, extra = [2, 3, 4], LastLevelP6P7(cfg.fpn_channels, cfg.fpn_channels)
    else:
        returned, extra = [1, 2, 3, 4], LastLevelMaxPool()
    return BackboneWithFPN(
        body,
        return_layers={f"layer{k}": str(i) for i, k in enumerate(returned)},
        in_channels_list=[widths[k - 1] for k in returned],
        out_channels=cfg.fpn_channels,
        extra_blocks=extra,
    )


def build_model(cfg: Config, num_classes: int) -> nn.Module:
    """A torchvision detector for `num_classes` object classes (+ background), randomly initialised."""
    from torchvision.models import detection
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    arch, backbone_name = parse_model(cfg.model)
    min_size, max_size = input_sizes(cfg)
    common = dict(min_size=min_size, max_size=max_size, num_classes=num_classes + 1)
    sizes = list(cfg.anchor_sizes or [32, 64, 128, 256, 512])
    if backbone_name == "mobilenet_v3":
        from torchvision.models.detection.backbone_utils import mobilenet_backbone

        if cfg.norm == "gn":
            raise ValueError("task.norm=gn is not available for mobilenet_v3 (channel counts like 40 and 72)")
        if cfg.backbone_weights:
            raise ValueError("task.backbone_weights is supported for ResNet backbones only")
        backbone = mobilenet_backbone(
            backbone_name="mobilenet_v3_large", weights=None, fpn=True, norm_layer=_norm_layer(cfg.norm),
            trainable_layers=6,
        )
        # torchvision's mobilenet FPN has 3 levels that each see every anchor size.
        anchors = AnchorGenerator((tuple(sizes),) * 3, ((0.5, 1.0, 2.0),) * 3)
    else:
        backbone = _resnet_fpn(cfg, backbone_name, arch)
        anchors = None
    if arch == "retinanet":
        # Three scales per octave (2^0, 2^1/3, 2^2/3) and three aspect ratios per level, as in the RetinaNet paper.
        anchors = AnchorGenerator(
            tuple((s, round(s * 2 ** (1 / 3)), round(s * 2 ** (2 / 3))) for s in sizes), ((0.5, 1.0, 2.0),) * 5
        )
        return detection.RetinaNet(
            backbone, anchor_generator=anchors, score_thresh=cfg.score_threshold,
            detections_per_img=cfg.detections_per_image, **common,
        )
    if arch == "fcos":  # anchor-free: one point per location, sized by the level's stride (torchvision default)
        return detection.FCOS(
            backbone, score_thresh=cfg.score_threshold, detections_per_img=cfg.detections_per_image, **common
        )
    if anchors is None:
        anchors = AnchorGenerator(tuple((s,) for s in sizes), ((0.5, 1.0, 2.0),) * 5)
    rcnn = dict(
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=cfg.rpn_top_n_train, rpn_post_nms_top_n_train=cfg.rpn_top_n_train,
        rpn_pre_nms_top_n_test=cfg.rpn_top_n_test, rpn_post_nms_top_n_test=cfg.rpn_top_n_test,
        box_batch_size_per_image=cfg.box_batch_size_per_image, box_score_thresh=cfg.score_threshold,
        box_detections_per_img=cfg.detections_per_image,
    )
    cls = detection.MaskRCNN if arch == "maskrcnn" else detection.FasterRCNN
    return cls(backbone, **rcnn, **common)


# ------------------------------------------------------------------------------------------------ evaluation
def to_coco_results(outputs: list[dict], image_ids: list[int], label_to_category_id: list[int]) -> list[dict]:
    """torchvision detector outputs (xyxy boxes, labels 1..K, scores, optional [N,1,H,W] mask probabilities)
    -> COCO result dicts (xywh boxes, category ids, compressed RLE masks thresholded at 0.5)."""
    import numpy as np
    from pycocotools import mask as mask_utils

    results = []
    for output, image_id in zip(outputs, image_ids):
        boxes = output["boxes"].detach().float().cpu()
        boxes[:, 2:] -= boxes[:, :2]
        labels = output["labels"].tolist()
        scores = output["scores"].detach().float().cpu().tolist()
        rles = None
        if "masks" in output:
            binary = (output["masks"][:, 0] > 0.5).cpu().numpy().astype(np.uint8)
            rles = mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0))) if len(binary) else []
        for k, (box, label, score) in enumerate(zip(boxes.tolist(), labels, scores)):
            result = {"image_id": int(image_id), "category_id": label_to_category_id[label], "bbox": box,
                      "score": float(score)}
            if rles is not None:
                result["segmentation"] = {"size": rles[k]["size"], "counts": rles[k]["counts"].decode("ascii")}
            results.append(result)
    return results


def make_evaluate(eval_set, cfg: Config, device: torch.device):
    """evaluate(model) -> COCO metrics on `eval_set` in one process (see `sharded_evaluation`)."""
    from benchmarks.evaluation import evaluate_sharded

    spec = sharded_evaluation(eval_set, cfg)
    return lambda model: evaluate_sharded(spec, model, device)


def sharded_evaluation(eval_set, cfg: Config):
    """COCO metrics of the detections gathered from every rank's shard, in the dataset's order (the same results
    list one process makes, so the same AP)."""
    from benchmarks.data.coco import detection_collate
    from benchmarks.evaluation import ShardedEvaluation
    from benchmarks.metrics.coco_eval import coco_evaluate

    def batch_outputs(model: nn.Module, batch) -> dict[str, list]:
        images, targets = batch
        outputs = model(list(images))
        ids = [t["image_id"] for t in targets]
        return {"results": to_coco_results(outputs, ids, eval_set.label_to_category_id)}

    def finish(out: dict[str, list]) -> dict[str, float]:
        return coco_evaluate(eval_set.coco, out.get("results", []), image_ids=eval_set.image_ids,
                             backend=cfg.eval_backend,
                             iou_types=("bbox", "segm") if parse_model(cfg.model)[0] == "maskrcnn" else ("bbox",))

    return ShardedEvaluation(eval_set, cfg.eval_batch_size, None, finish, batch_outputs=batch_outputs,
                             collate_fn=detection_collate, num_workers=cfg.num_workers)


# ----------------------------------------------------------------------------------------------------- task
def setup(cfg: Config, ctx: RunContext) -> TaskSetup:
    """Build data, model, loss and COCO evaluation for the torchvision path."""
    check_config(cfg)
    if cfg.framework != "torchvision":
        raise ValueError(
            f"task.framework={cfg.framework!r} trains through benchmarks.openmmlab (the engine calls "
            "benchmarks.frameworks), not through setup(); use framework=torchvision here"
        )
    from benchmarks.data.coco import detection_collate

    train_set, eval_set = build_datasets(cfg, ctx.cache_dir)
    model = build_model(cfg, train_set.num_classes)  # the engine moves it to the device
    device = ctx.device

    def train_loss(model: nn.Module, batch) -> torch.Tensor:
        images, targets = batch
        images = [im.to(device, non_blocking=True) for im in images]
        targets = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]
        losses = model(images, targets)  # dict of the detector's loss terms
        return sum(losses.values())

    notes = []
    if cfg.dataset == "procedural_coco":
        notes.append("dataset: procedural COCO-format scenes (offline stand-in for COCO 2017)")
    if cfg.backbone_weights is None:
        notes.append("backbone randomly initialised (the paper starts from ImageNet weights)")
    return TaskSetup(
        model=model,
        train_set=train_set,
        train_loss=train_loss,
        evaluate=make_evaluate(eval_set, cfg, device),
        sharded_evaluation=sharded_evaluation(eval_set, cfg),
        headline="bbox_ap",
        higher_is_better=True,
        dataset=cfg.dataset if cfg.dataset != "procedural_coco" else "procedural_coco (offline)",
        collate_fn=detection_collate,
        param_groups=lambda m: [{"params": [p for p in m.parameters() if p.requires_grad]}],
        notes=notes,
    )
