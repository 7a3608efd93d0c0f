"""Image classification: Fashion-MNIST (embedded default), digits, CIFAR-10/100, ImageNet; small CNNs or timm models.

    sema-bench recipe=quick/classification method=sema            # Fashion-MNIST subset, small CNN, CPU
    sema-bench recipe=paper/classification method=sema                # the paper's CIFAR-100 recipe (GPU)

Datasets (`task.dataset`): `fashion_mnist` (padded to 32x32, 3 channels, so CIFAR-stem nets run unchanged),
`digits` (sklearn, 8x8, for the fastest tests), `cifar10`, `cifar100` (torchvision layout under `task.data_root`),
`imagenet` (ImageFolder or torchvision ImageNet layout under `task.data_root`).
Models (`task.model`): the project's `small_cnn` / `tiny_cnn`, or any timm name (`resnet18`, `resnet50`,
`deit_small_patch16_224`, `convnext_tiny`, ...), built without pretrained weights. For inputs of 64 px or less the
ImageNet stem of ResNets/ConvNeXts is replaced by a 3x3 stride-1 convolution (the usual "CIFAR stem").
Metrics: top1 and top5 accuracy (percent) and the cross-entropy loss on the test set; headline: top1.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import partial
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from benchmarks.data.device_batches import PADDINGS, pad_images, random_crop_flip
from benchmarks.evaluation import ShardedEvaluation, evaluate_sharded
from benchmarks.tasks.protocol import RunContext, TaskConfig, TaskSetup

# name -> (number of classes, native image size, mean, std, horizontal flips make sense)
DATASETS = {
    "fashion_mnist": (10, 32, (0.2860,) * 3, (0.3530,) * 3, True),
    "digits": (10, 8, (0.3050,) * 3, (0.3840,) * 3, False),
    "cifar10": (10, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), True),
    "cifar100": (100, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), True),
    "imagenet": (1000, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), True),
}
SUBSET_SEED = 0  # the train/eval subsets (max_*_samples) are fixed: the same for every seed and method


@dataclass
class Config(TaskConfig):
    """Image classification."""

    name: str = "classification"
    dataset: str = "fashion_mnist"  # fashion_mnist | digits | cifar10 | cifar100 | imagenet
    model: str = "small_cnn"  # small_cnn | tiny_cnn | any timm model name (random init, no download)
    image_size: Optional[int] = None  # resize inputs to this size (e.g. 224 for DeiT on CIFAR); null = native
    augment: bool = True  # random crop (pad size/8) + horizontal flip; RandomResizedCrop + flip for imagenet
    crop_padding: str = "constant"  # padding before the random crop: constant (zeros, torchvision's default) |
    #                                 reflect (the official CIFAR CNN configs)
    rand_augment: Optional[str] = None  # timm RandAugment spec after crop and flip, e.g. "rand-m7-mstd0.5" (the
    #                                     official AdamW CIFAR configs); null = none
    resized_crop_scale: Optional[list[float]] = None  # [lo, hi]: RandomResizedCrop(image_size, scale) instead of
    #                              pad-and-crop, bicubic (the official 224-px ViT configs: [0.8, 1.0]); null = off
    interpolation: str = "bicubic"  # bicubic | bilinear: RandomResizedCrop and ImageNet's test Resize (the
    #                                   official configs: bicubic, interpolation=3)
    random_erasing: float = 0.0  # probability of timm's RandomErasing (per-pixel noise, area 2-33%) after
    #                              Normalize (the official ImageNet ViT/ConvNeXt configs: 0.25); 0 = off
    mixup_alpha: float = 0.0  # batch mixup Beta(alpha, alpha) via timm.data.Mixup (official ImageNet configs: 0.8)
    cutmix_alpha: float = 0.0  # batch cutmix Beta(alpha, alpha) (official ImageNet configs: 1.0); with both > 0,
    #                            each batch takes one of the two, cutmix with probability mix_switch_prob
    mix_switch_prob: float = 0.5  # P(cutmix) when both are on (openmixup draws mixup or cutmix evenly)
    label_smoothing: float = 0.0  # cross-entropy label smoothing (0.1 in the paper's AdamW recipes); with mixing it
    #                               smooths the mixed targets (timm's mixup_target)
    drop_path: float = 0.0  # stochastic depth of timm models (0.3 ConvNeXt-T, 0.5 ConvNeXt-S, 0.2 Swin-T)
    drop_rate: float = 0.0  # timm models' dropout before the classifier
    proj_drop_rate: float = 0.0  # timm models' dropout inside each block's MLP (openmixup's MlpMixer drop_rate)
    cifar_stem: Optional[bool] = None  # 3x3 stride-1 stem for ResNet/ConvNeXt; null = when image size <= 64


# ----------------------------------------------------------------------------------------------------- data
class ArrayImages(Dataset):
    """uint8 images [N, H, W, C] in memory -> (normalised float [C, H, W], label), with optional augmentation
    (random crop after padding by size/8, zeros or a reflection, and a horizontal flip).

    Per example (`__getitem__`, the DataLoader path) augmentation draws from torch's global RNG (the engine seeds
    it and saves it in checkpoints; DataLoader workers get seeds derived from the loader's generator), so runs and
    resumes are reproducible. With trainer.data_on_device the engine moves the pixels to the device once
    (`on_device`) and asks for whole augmented batches (`batch`; benchmarks/data/device_batches.py).
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean, std, augment: bool, flip: bool,
                 padding: str = "constant"):
        self.images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
        self.labels = torch.from_numpy(labels.astype(np.int64))
        self.mean = torch.tensor(mean).view(-1, 1, 1) * 255.0
        self.std = torch.tensor(std).view(-1, 1, 1) * 255.0
        self.augment, self.flip, self.padding = augment, flip, padding
        self.pad = max(1, self.images.shape[-1] // 8)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = self.images[i].float()
        if self.augment:
            h, w = x.shape[-2:]
            x = pad_images(x, self.pad, self.padding)
            top, left = torch.randint(0, 2 * self.pad + 1, (2,)).tolist()
            x = x[:, top : top + h, left : left + w]
            if self.flip and torch.rand(()) < 0.5:
                x = x.flip(-1)
        return (x - self.mean) / self.std, self.labels[i]

    def on_device(self, device: torch.device) -> "ArrayImages":
        moved = copy.copy(self)
        for name in ("images", "labels", "mean", "std"):
            setattr(moved, name, getattr(self, name).to(device))
        return moved

    def batch(self, indices: torch.Tensor, generator: torch.Generator):
        x = self.images[indices].float()
        if self.augment:
            x = random_crop_flip(x, self.pad, self.padding, self.flip, generator)
        return (x - self.mean) / self.std, self.labels[indices]


class TransformedImages(Dataset):
    """uint8 images [N, H, W, C] in memory -> (torchvision/timm `transform` of the PIL image, label): the per-image
    pipelines of the official configs (RandomResizedCrop, RandAugment) that have no batched form here. Their
    randomness comes from torch's and Python's global RNGs (seeded by the engine, saved in checkpoints)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, torch.from_numpy(labels.astype(np.int64)), transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


INTERPOLATIONS = ("bicubic", "bilinear")


def _interpolation(cfg: "Config"):
    from torchvision import transforms as T

    if cfg.interpolation not in INTERPOLATIONS:
        raise ValueError(f"task.interpolation={cfg.interpolation!r} is not allowed; choose one of: "
                         f"{', '.join(INTERPOLATIONS)}")
    return T.InterpolationMode(cfg.interpolation)


def image_pipeline(cfg: "Config", image_size: int, mean, std, flip: bool):
    """The training transform of the official configs: RandomResizedCrop(image_size, scale, `interpolation`) when
    `resized_crop_scale` is set (always for imagenet: default scale 0.08-1), else RandomCrop with padding size/8
    (`crop_padding`); a horizontal flip; timm's RandAugment (`rand_augment`); ToTensor, Normalize; timm's
    RandomErasing (`random_erasing`)."""
    from timm.data.auto_augment import rand_augment_transform
    from timm.data.random_erasing import RandomErasing
    from torchvision import transforms as T

    native = DATASETS[cfg.dataset][1]
    if cfg.resized_crop_scale is not None or cfg.dataset == "imagenet":
        scale = tuple(cfg.resized_crop_scale) if cfg.resized_crop_scale is not None else (0.08, 1.0)
        crop = T.RandomResizedCrop(image_size, scale=scale, interpolation=_interpolation(cfg))
    else:
        crop = T.RandomCrop(native, padding=max(1, native // 8), padding_mode=cfg.crop_padding)
    steps = [crop] + ([T.RandomHorizontalFlip()] if flip else [])
    if cfg.rand_augment:
        fill = tuple(round(255 * m) for m in mean)
        from PIL import Image

        steps.append(rand_augment_transform(cfg.rand_augment, {"translate_const": int(image_size * 0.45),
                                                               "img_mean": fill,
                                                               "interpolation": Image.BICUBIC}))
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    if cfg.random_erasing:
        steps.append(RandomErasing(cfg.random_erasing, mode="pixel", device="cpu"))
    return T.Compose(steps)


def _subset(n: int, cap: Optional[int]) -> Optional[np.ndarray]:
    if cap is None or cap >= n:
        return None
    return np.sort(np.random.default_rng(SUBSET_SEED).permutation(n)[:cap])


def _array_split(cfg: Config, split: str) -> tuple[np.ndarray, np.ndarray]:
    from benchmarks.data import cifar, digits, fashion_mnist

    if cfg.dataset == "fashion_mnist":
        x, y = fashion_mnist.load_fashion_mnist(split, cfg.data_root)
        return fashion_mnist.to_rgb32(x), y
    if cfg.dataset == "digits":
        return digits.load_digits(split)
    return cifar.load_cifar(cfg.dataset, split, cfg.data_root)


def build_datasets(cfg: Config) -> tuple[Dataset, Dataset]:
    """(train set, eval set), each already cut to max_train_samples / max_eval_samples (fixed subsets)."""
    if cfg.dataset not in DATASETS:
        raise ValueError(f"task.dataset={cfg.dataset!r} is not allowed; choose one of: {', '.join(DATASETS)}")
    if cfg.crop_padding not in PADDINGS:
        raise ValueError(f"task.crop_padding={cfg.crop_padding!r} is not allowed; choose one of: {', '.join(PADDINGS)}")
    _, _, mean, std, flip = DATASETS[cfg.dataset]
    if cfg.dataset == "imagenet":
        out = []
        for ds, cap in zip(_imagenet_sets(cfg, mean, std), (cfg.max_train_samples, cfg.max_eval_samples)):
            keep = _subset(len(ds), cap)
            out.append(ds if keep is None else torch.utils.data.Subset(ds, keep.tolist()))
        return out[0], out[1]
    out = []
    for split, cap, augment in (("train", cfg.max_train_samples, cfg.augment), ("test", cfg.max_eval_samples, False)):
        x, y = _array_split(cfg, split)
        keep = _subset(len(y), cap)
        if keep is not None:
            x, y = x[keep], y[keep]
        if augment and (cfg.rand_augment or cfg.resized_crop_scale is not None or cfg.random_erasing):
            size = cfg.image_size or DATASETS[cfg.dataset][1]
            out.append(TransformedImages(x, y, image_pipeline(cfg, size, mean, std, flip)))
        else:
            out.append(ArrayImages(x, y, mean, std, augment=augment, flip=flip, padding=cfg.crop_padding))
    return out[0], out[1]


def _imagenet_sets(cfg: Config, mean, std):
    from torchvision import transforms as T

    from benchmarks.data.imagenet import load_imagenet

    size = cfg.image_size or 224
    eval_tf = T.Compose([T.Resize(int(size * 256 / 224), interpolation=_interpolation(cfg)), T.CenterCrop(size),
                         T.ToTensor(), T.Normalize(mean, std)])
    train_tf = image_pipeline(cfg, size, mean, std, flip=True) if cfg.augment else eval_tf
    return load_imagenet("train", cfg.data_root, train_tf), load_imagenet("val", cfg.data_root, eval_tf)


# --------------------------------------------------------------------------------------------------- models
def _project_models():
    from benchmarks.models.small_cnn import SmallCNN
    from benchmarks.models.wide_resnet import WideResNet

    return {"small_cnn": partial(SmallCNN, width=32), "tiny_cnn": partial(SmallCNN, width=16),
            "wrn28_10": partial(WideResNet, 28, 10),  # WRN-28-10 as published (36.5M parameters)
            "wrn28_10_openmixup": partial(WideResNet, 28, 10, variant="openmixup"),  # the official configs' network
            "wrn10_1": partial(WideResNet, 10, 1),  # CPU twins: the same code at depth 10, width 1
            "wrn10_1_openmixup": partial(WideResNet, 10, 1, variant="openmixup")}


_VIT_LIKE = ("vit", "deit", "swin", "mixer", "beit", "cait", "eva")  # timm families that take img_size=


def build_model(cfg: Config, num_classes: int, image_size: int) -> nn.Module:
    """A project model or a randomly initialised timm model, with a CIFAR stem for small inputs."""
    project = _project_models()
    if cfg.model in project:
        return project[cfg.model](num_classes=num_classes)
    import timm

    if not timm.is_model(cfg.model):
        raise ValueError(
            f"task.model={cfg.model!r} is not allowed; choose one of: {', '.join(project)}, "
            "or any name in timm.list_models() (e.g. resnet18, resnet50, deit_small_patch16_224, convnext_tiny)"
        )
    kwargs = {"pretrained": False, "num_classes": num_classes}
    if cfg.drop_path:  # not every family takes it (DenseNet does not)
        kwargs["drop_path_rate"] = cfg.drop_path
    for key in ("drop_rate", "proj_drop_rate"):  # the regression and ssl tasks build through here without them
        if getattr(cfg, key, 0.0):
            kwargs[key] = getattr(cfg, key)
    if cfg.model.startswith(_VIT_LIKE):
        kwargs["img_size"] = image_size
    model = timm.create_model(cfg.model, **kwargs)
    vit_like = cfg.model.startswith(_VIT_LIKE)  # they take img_size= instead of a stem
    want = cfg.cifar_stem if cfg.cifar_stem is not None else image_size <= 64 and not vit_like
    if want and not _cifar_stem(model):
        raise ValueError(
            f"task.model={cfg.model!r} at {image_size} px: no CIFAR stem is known for it (supported: the ResNet, "
            "ResNeXt and Wide-ResNet families (conv1 + maxpool), DenseNet (features.conv0/pool0), ConvNeXt "
            "(patchify stem); ViT-like models take img_size); set task.cifar_stem=false to keep its ImageNet stem "
            "on purpose, or task.image_size=224")
    return model


def _cifar_stem(model: nn.Module) -> bool:
    """Replace an ImageNet stem (7x7/2 conv + max-pool: ResNet, ResNeXt, wide ResNet, DenseNet; or a 4x4/4 patchify
    conv: ConvNeXt) by a 3x3 stride-1 conv.

    Returns False (model unchanged) for architectures without such a stem (ViTs take img_size= instead).
    """
    if hasattr(model, "conv1") and hasattr(model, "maxpool") and isinstance(model.conv1, nn.Conv2d):  # ResNets
        model.conv1 = nn.Conv2d(model.conv1.in_channels, model.conv1.out_channels, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
        return True
    features = getattr(model, "features", None)
    if isinstance(getattr(features, "conv0", None), nn.Conv2d) and hasattr(features, "pool0"):  # DenseNet
        old = features.conv0
        features.conv0 = nn.Conv2d(old.in_channels, old.out_channels, 3, 1, 1, bias=False)
        features.norm0 = nn.Identity()  # DenseNet_CIFAR's stem is the conv alone (each dense layer pre-activates)
        features.pool0 = nn.Identity()
        return True
    if hasattr(model, "stem") and isinstance(model.stem, nn.Sequential) and isinstance(model.stem[0], nn.Conv2d):
        old = model.stem[0]  # ConvNeXt family: patchify conv
        model.stem[0] = nn.Conv2d(old.in_channels, old.out_channels, 3, 1, 1, bias=old.bias is not None)
        return True
    return False


def batch_mixing(cfg: Config, num_classes: int, drop_last: bool = True):
    """timm's Mixup for `mixup_alpha` / `cutmix_alpha` > 0, else None: mix(x, y) -> (x mixed in place with the
    flipped batch, targets lam * onehot(y) + (1 - lam) * onehot(flip(y)), smoothed by label_smoothing), one lam per
    batch (mode "batch"); lam ~ Beta(alpha, alpha), for cutmix corrected to the pasted box's area. It draws from
    numpy's global RNG, which the engine seeds per rank and saves in checkpoints."""
    if cfg.mixup_alpha < 0 or cfg.cutmix_alpha < 0 or not 0 <= cfg.mix_switch_prob <= 1:
        raise ValueError(f"task.mixup_alpha={cfg.mixup_alpha}, task.cutmix_alpha={cfg.cutmix_alpha}: each must be >= 0 "
                         f"(0 = off), and task.mix_switch_prob={cfg.mix_switch_prob} in [0, 1]")
    if not (cfg.mixup_alpha or cfg.cutmix_alpha):
        return None
    if cfg.batch_size % 2 or not drop_last:
        raise ValueError(f"task.batch_size={cfg.batch_size} with trainer.drop_last={drop_last}: mixup/cutmix need "
                         "even batches (timm mixes each batch with its flipped self): an even batch size and "
                         "trainer.drop_last=true")
    from timm.data import Mixup

    return Mixup(mixup_alpha=cfg.mixup_alpha, cutmix_alpha=cfg.cutmix_alpha, switch_prob=cfg.mix_switch_prob,
                 label_smoothing=cfg.label_smoothing, num_classes=num_classes, mode="batch")


# ----------------------------------------------------------------------------------------------------- task
def setup(cfg: Config, ctx: RunContext) -> TaskSetup:
    """Build the data, the model, the loss and the evaluation for one run."""
    if cfg.dataset not in DATASETS:
        raise ValueError(f"task.dataset={cfg.dataset!r} is not allowed; choose one of: {', '.join(DATASETS)}")
    num_classes, native_size = DATASETS[cfg.dataset][:2]
    image_size = cfg.image_size or native_size
    train_set, eval_set = build_datasets(cfg)
    model = build_model(cfg, num_classes, image_size)  # the engine moves it to the device
    # imagenet's transforms and RandomResizedCrop already give image_size; evaluation images are resized here
    resize = cfg.image_size is not None and cfg.dataset != "imagenet"

    def prepare(x: torch.Tensor) -> torch.Tensor:
        # Resizing on the device, per batch, is much cheaper than per image in the loader.
        if not resize or x.shape[-1] == image_size:  # RandomResizedCrop already gave the training size
            return x
        return F.interpolate(x, size=image_size, mode="bilinear", align_corners=False)

    mix = batch_mixing(cfg, num_classes, ctx.drop_last)

    def train_loss(model: nn.Module, batch) -> torch.Tensor:
        x, y = batch
        if mix is None:
            return F.cross_entropy(model(prepare(x)), y, label_smoothing=cfg.label_smoothing)
        x, soft = mix(x, y)  # mixed images, smoothed mixed targets [B, classes]
        return F.cross_entropy(model(prepare(x)), soft)

    topk = min(5, num_classes)

    def batch_sums(model: nn.Module, batch) -> dict[str, torch.Tensor]:
        x, y = batch
        logits = model(prepare(x)).float()
        top = logits.topk(topk, dim=1).indices
        return {"loss": F.cross_entropy(logits, y, reduction="sum"), "correct1": (top[:, 0] == y).sum(),
                "correctk": (top == y[:, None]).any(dim=1).sum(), "n": torch.tensor(len(y), device=y.device)}

    def finish(t: dict[str, float]) -> dict[str, float]:
        return {"top1": 100.0 * t["correct1"] / t["n"], f"top{topk}": 100.0 * t["correctk"] / t["n"],
                "loss": t["loss"] / t["n"]}

    sharded = ShardedEvaluation(eval_set, cfg.eval_batch_size, batch_sums, finish, num_workers=cfg.num_workers)

    def evaluate(model: nn.Module) -> dict[str, float]:
        return evaluate_sharded(sharded, model, ctx.device)

    notes = []
    if cfg.dataset == "fashion_mnist":
        notes.append("Fashion-MNIST stands in for CIFAR-100 offline (padded to 32x32, grey repeated to 3 channels)")
    if cfg.max_train_samples is not None:
        notes.append(f"training on a fixed subset of {len(train_set)} images")
    return TaskSetup(
        model=model,
        train_set=train_set,
        train_loss=train_loss,
        evaluate=evaluate,
        sharded_evaluation=sharded,
        headline="top1",
        higher_is_better=True,
        dataset=cfg.dataset,
        notes=notes,
    )
