"""Semantic segmentation (recipes `*/segmentation`): torchvision LRASPP / DeepLabV3 / FCN, or a timm backbone
with a light FPN head (`fpn_<timm name>`, benchmarks/models/fpn_segmenter.py), all trained from scratch.

Datasets (one reader, `benchmarks.data.segmentation_pairs`):

* `procedural_coco` (embedded default): the procedural COCO scenes of `benchmarks.data.procedural_coco` (the
  same images the detection task uses) with their semantic class maps: 5 classes (background, circle, square,
  triangle, Fashion-MNIST garment), no ignored pixels;
* `ade20k`: ADEChallengeData2016 under `task.data_root` (150 classes, 0 = ignored; see
  `benchmarks.data.ade20k`).

Metrics on the validation split, from one confusion matrix over all its pixels: `miou` (headline, percent),
`pixel_acc` and `macc` (mean class accuracy), both percent, and the cross-entropy `loss`. Two evaluation
modes:

* `task.eval_mode=resize` (default): images and masks resized to `input_size` x `input_size`, one forward
  pass, metrics at that size;
* `task.eval_mode=slide` (the ADE20K paper config; mmseg's test mode): each image at its own aspect ratio,
  shorter side rescaled to `eval_crop` (longer side at most 4x), class scores from `eval_crop` windows every
  `eval_stride` pixels averaged where windows overlap (benchmarks/metrics/sliding_window.py), then upsampled
  bilinearly to the ORIGINAL annotation size, where the metrics are computed. mmseg's ADE20K: 512 / 341.

`task.framework=mmseg` trains FCN / DeepLabV3 through mmseg's own Runner with the sema mmengine hook instead
(`run()` below; benchmarks/openmmlab/mmseg_runner.py), on the same data and into the same result.json.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.data.segmentation_pairs import IGNORE_INDEX, SegmentationPairs
from benchmarks.metrics.segmentation import confusion_matrix, segmentation_scores
from benchmarks.evaluation import ShardedEvaluation, evaluate_sharded
from benchmarks.tasks.protocol import RunContext, TaskConfig, TaskSetup

DATASETS = ("procedural_coco", "ade20k")
# model name -> torchvision.models.segmentation builder
MODELS = {
    "lraspp_mobilenet_v3_large": "lraspp_mobilenet_v3_large",
    "deeplabv3_mobilenet_v3_large": "deeplabv3_mobilenet_v3_large",
    "deeplabv3_resnet50": "deeplabv3_resnet50",
    "deeplabv3_resnet101": "deeplabv3_resnet101",
    "fcn_resnet50": "fcn_resnet50",
    "fcn_resnet101": "fcn_resnet101",
}
FPN_PREFIX = "fpn_"  # fpn_<timm model>, e.g. fpn_resnet18: a timm backbone + benchmarks.models.FPNSegmenter


FRAMEWORKS = ("torchvision", "mmseg")
EVAL_MODES = ("resize", "slide")


@dataclass
class Config(TaskConfig):
    name: str = "segmentation"
    dataset: str = "procedural_coco"  # procedural_coco (offline, generated) | ade20k (task.data_root)
    model: str = "fpn_resnet18"  # one of MODELS (torchvision) or fpn_<timm name>; random init (no download)
    batch_size: int = 16
    eval_batch_size: int = 32
    input_size: int = 128  # images and masks are resized to input_size x input_size (training and evaluation)
    image_size: int = 128  # procedural_coco: side of the generated scenes (shared cache with the detection task)
    train_images: int = 512  # procedural_coco: training scenes generated (max_train_samples may use fewer)
    val_images: int = 128  # procedural_coco: validation scenes generated (max_eval_samples may use fewer)
    max_objects: int = 4  # procedural_coco: objects per scene, 1..max_objects
    data_seed: int = 0  # procedural_coco: seed of the scenes, fixed: every run and method sees the same data
    eval_mode: str = "resize"  # resize (input_size x input_size) | slide (mmseg's sliding window at full
    #                            annotation resolution; see the module docstring)
    eval_crop: Optional[int] = None  # slide: window side, and the images' shorter side; None = input_size
    eval_stride: Optional[int] = None  # slide: window step; None = 2/3 of eval_crop (mmseg: 341 for 512)
    framework: str = "torchvision"  # torchvision (the engine's loop) | mmseg (mmseg's Runner + the sema hook;
    #                                 models <head>_<backbone>, e.g. fcn_resnet18; needs scripts/install_openmmlab.sh)


def check_model(name: str) -> None:
    if name not in MODELS and not name.startswith(FPN_PREFIX):
        raise ValueError(f"unknown segmentation model {name!r}; allowed: {', '.join(MODELS)}, "
                         f"or {FPN_PREFIX}<timm model name> (e.g. fpn_resnet18)")


def build_model(name: str, num_classes: int) -> nn.Module:
    """A randomly initialised segmentation model (no pretrained weights, no auxiliary head)."""
    check_model(name)
    if name.startswith(FPN_PREFIX):
        from benchmarks.models.fpn_segmenter import FPNSegmenter

        return FPNSegmenter(name[len(FPN_PREFIX) :], num_classes)
    from torchvision.models import segmentation

    builder = getattr(segmentation, MODELS[name])
    return builder(weights=None, weights_backbone=None, num_classes=num_classes)


def build_datasets(cfg: Config, ctx: RunContext) -> tuple[SegmentationPairs, SegmentationPairs, int, str]:
    """(train set, validation set, number of classes, dataset name for results)."""
    if cfg.dataset == "procedural_coco":
        from benchmarks.data import procedural_coco

        def pairs(split: str, n: int):
            scenes = procedural_coco.cached_scenes(
                ctx.cache_dir, split, n, cfg.image_size, cfg.data_seed, cfg.max_objects
            )
            images = sorted(scenes.image_dir.glob("*.png"))
            return [(image, scenes.semantic_dir / image.name) for image in images]

        train_pairs, val_pairs = pairs("train", cfg.train_images), pairs("val", cfg.val_images)
        num_classes, zero_is_ignore = len(procedural_coco.CLASS_NAMES), False
        name = "procedural_coco-semantic (offline)"
    elif cfg.dataset == "ade20k":
        from benchmarks.data import ade20k

        train_pairs, val_pairs = (
            ade20k.ade20k_pairs(cfg.data_root, "train"),
            ade20k.ade20k_pairs(cfg.data_root, "val"),
        )
        num_classes, zero_is_ignore, name = ade20k.NUM_CLASSES, True, "ade20k"
    else:
        raise ValueError(f"unknown segmentation dataset {cfg.dataset!r}; allowed: {', '.join(DATASETS)}")
    train = SegmentationPairs(train_pairs, cfg.input_size, True, zero_is_ignore, cfg.max_train_samples)
    if cfg.eval_mode == "slide":  # images at their own aspect ratio, masks at full resolution
        crop, _ = slide_window(cfg)
        val = SegmentationPairs(val_pairs, crop, False, zero_is_ignore, cfg.max_eval_samples, keep_ratio=True)
    else:
        val = SegmentationPairs(val_pairs, cfg.input_size, False, zero_is_ignore, cfg.max_eval_samples)
    return train, val, num_classes, name


def slide_window(cfg: Config) -> tuple[int, int]:
    """(crop, stride) of the sliding-window evaluation, defaults filled in and checked."""
    if cfg.eval_mode not in EVAL_MODES:
        raise ValueError(f"unknown task.eval_mode={cfg.eval_mode!r}; allowed: {', '.join(EVAL_MODES)}")
    crop = cfg.eval_crop if cfg.eval_crop is not None else cfg.input_size
    stride = cfg.eval_stride if cfg.eval_stride is not None else max(1, crop * 2 // 3)
    if not 1 <= stride <= crop:
        raise ValueError(
            f"task.eval_stride={stride} must lie in [1, eval_crop={crop}]: larger steps skip pixels"
        )
    return crop, stride


def logits_of(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] class scores at the input size (torchvision returns {"out": ...}, upsampled)."""
    out = model(images)
    out = out["out"] if isinstance(out, dict) else out
    if out.shape[-2:] != images.shape[-2:]:
        out = F.interpolate(out, size=images.shape[-2:], mode="bilinear", align_corners=False)
    return out


def segmentation_loss(model: nn.Module, batch) -> torch.Tensor:
    images, masks = batch
    return F.cross_entropy(logits_of(model, images), masks, ignore_index=IGNORE_INDEX)


def make_evaluator(val_set: SegmentationPairs, num_classes: int, batch_size: int, device: torch.device,
                   slide: Optional[tuple[int, int]] = None):
    """`evaluate(model)` over the whole validation set in one process (see `sharded_evaluation`)."""
    spec = sharded_evaluation(val_set, num_classes, batch_size, slide)
    return lambda model: evaluate_sharded(spec, model, device)


def sharded_evaluation(val_set: SegmentationPairs, num_classes: int, batch_size: int,
                       slide: Optional[tuple[int, int]] = None) -> ShardedEvaluation:
    """Validation metrics as sums (confusion matrix, loss, pixels), shardable across ranks; `slide=(crop,
    stride)`: sliding-window scores upsampled to each full-size mask."""
    from benchmarks.metrics.sliding_window import sliding_window_logits

    def predict(model: nn.Module, images: torch.Tensor, label_size: torch.Size) -> torch.Tensor:
        if slide is None:
            return logits_of(model, images)
        crop, stride = slide
        logits = sliding_window_logits(lambda x: logits_of(model, x), images, crop, stride, batch_size)
        return F.interpolate(logits, size=label_size, mode="bilinear", align_corners=False)

    def batch_sums(model: nn.Module, batch) -> dict[str, torch.Tensor]:
        images, masks = batch
        logits = predict(model, images, masks.shape[-2:]).float()
        return {"loss": F.cross_entropy(logits, masks, ignore_index=IGNORE_INDEX, reduction="sum"),
                "pixels": (masks != IGNORE_INDEX).sum(),
                "confusion": confusion_matrix(logits.argmax(1), masks, num_classes, IGNORE_INDEX)}

    def finish(t: dict[str, torch.Tensor]) -> dict[str, float]:
        loss = float(t["loss"]) / max(float(t["pixels"]), 1)
        return {**segmentation_scores(t["confusion"].to(torch.int64)), "loss": loss}

    # slide: images of different sizes, one per batch (its windows are batched instead)
    return ShardedEvaluation(val_set, 1 if slide else batch_size, batch_sums, finish)


def setup(cfg: Config, ctx: RunContext) -> TaskSetup:
    if cfg.framework not in FRAMEWORKS:
        raise ValueError(f"unknown task.framework={cfg.framework!r}; allowed: {', '.join(FRAMEWORKS)}")
    if cfg.framework != "torchvision":
        raise ValueError(f"task.framework={cfg.framework!r} trains through benchmarks.openmmlab (the engine calls "
                         "benchmarks.frameworks), not through setup(); use framework=torchvision here")
    check_model(cfg.model)
    window = slide_window(cfg)  # checks eval_mode and the window before any data is prepared
    slide = window if cfg.eval_mode == "slide" else None
    train_set, val_set, num_classes, dataset_name = build_datasets(cfg, ctx)
    model = build_model(cfg.model, num_classes)

    def analysis_batches():
        generator = torch.Generator().manual_seed(ctx.seed)
        order = torch.randperm(len(train_set), generator=generator)[: 2 * cfg.batch_size].tolist()
        unflipped = SegmentationPairs(train_set.pairs, cfg.input_size, False, train_set.zero_is_ignore)
        items = [unflipped[i] for i in order]
        return [
            tuple(torch.stack(t) for t in zip(*items[k : k + cfg.batch_size]))
            for k in range(0, len(items), cfg.batch_size)
        ]

    sharded = sharded_evaluation(val_set, num_classes, cfg.eval_batch_size, slide)
    return TaskSetup(
        model=model,
        train_set=train_set,
        train_loss=segmentation_loss,
        evaluate=lambda model: evaluate_sharded(sharded, model, ctx.device),
        sharded_evaluation=sharded,
        headline="miou",
        higher_is_better=True,
        dataset=dataset_name,
        analysis_batches=analysis_batches,
        notes=[
            f"{cfg.model} from scratch, {num_classes} classes, {len(train_set)} training / {len(val_set)} "
            f"validation images; training at {cfg.input_size}x{cfg.input_size}; "
            + (
                f"evaluation by {slide[0]}-px sliding windows every {slide[1]} px (shorter side {slide[0]}), "
                "metrics at full annotation resolution"
                if slide
                else f"evaluation at {cfg.input_size}x{cfg.input_size}, metrics at that size"
            )
        ],
    )
