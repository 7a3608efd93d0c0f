"""Image regression: RCF-MNIST angles (embedded default), AgeDB and IMDB-WIKI ages; L1 (or MSE) loss.

    sema-bench recipe=quick/regression method=sema                  # RCF-MNIST, offline backgrounds, CPU
    sema-bench recipe=paper/regression method=sema task.data_root=/data/cifar   # RCF-MNIST, CIFAR-10 backgrounds
    sema-bench recipe=paper/regression method=sema task.dataset=agedb task.data_root=/data/dir   # AgeDB

Datasets (`task.dataset`):
* `rcf_mnist`: rotated Fashion-MNIST silhouettes on backgrounds, target = angle in degrees (benchmarks/data/rcf_mnist.py;
  offline backgrounds by default, CIFAR-10 backgrounds when `task.data_root` holds cifar-10-batches-py/);
* `agedb`, `imdb_wiki`: faces with ages, from `<data_root>/<name>.csv` (path, age, split) + images
  (benchmarks/data/age_csv.py).
Models (`task.model`): `small_cnn` / `tiny_cnn` (CPU), or any timm name (resnet18/resnet50/convnext_tiny as in the
paper; CIFAR stem for inputs <= 64 px), built by the classification task's builder with one output.

The network predicts the standardised target (y - mean) / std of the training targets (`task.standardize_target`),
so its output starts at the right scale; metrics are always in the target's own unit (degrees, years).
Metrics: `mae` (headline, lower is better), `rmse`; for age datasets also the MAE per decade of age
(`mae_age_20_29`, ...) and per DIR shot group of the test ages (`mae_many` > 100 training images of that integer
age, `mae_few` < 20, `mae_medium` in between; Yang et al. 2021).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from benchmarks.evaluation import ShardedEvaluation, evaluate_sharded
from benchmarks.tasks.protocol import RunContext, TaskConfig, TaskSetup

DATASETS = ("rcf_mnist", "agedb", "imdb_wiki")
AGE_DATASETS = ("agedb", "imdb_wiki")
LOSSES = ("l1", "mse")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
MANY_SHOT, FEW_SHOT = 100, 20  # DIR's shot groups: > 100 training images of an age = many, < 20 = few


@dataclass
class Config(TaskConfig):
    """Image regression."""

    name: str = "regression"
    dataset: str = "rcf_mnist"  # rcf_mnist | agedb | imdb_wiki
    model: str = "small_cnn"  # small_cnn | tiny_cnn | any timm name (random init, no download)
    loss: str = "l1"  # l1 (the paper's) | mse
    image_size: Optional[int] = None  # input side; null = 32 for rcf_mnist, 224 for the age datasets
    augment: bool = True  # age datasets: RandomResizedCrop(scale 0.5-1) + flip; rcf_mnist is never rotated or
    #                       flipped (that would change its target), only shifted by `crop_padding`
    crop_padding: int = 0  # rcf_mnist training images: random 32-px crop after zero padding by this many pixels (the
    #                        official config: RandomCrop(32, padding=2)); 0 = none
    standardize_target: bool = True  # the network predicts (y - mean) / std of the training targets
    cifar_stem: Optional[bool] = None  # 3x3 stride-1 stem for timm ResNet/ConvNeXt; null = when image size <= 64
    drop_path: float = 0.0  # stochastic depth of timm models
    csv_name: Optional[str] = None  # age datasets: CSV file under data_root; null = agedb.csv / imdb_wiki.csv
    eval_split: str = "test"  # age datasets: the split to evaluate (val | test)


# ----------------------------------------------------------------------------------------------------- data
class ArrayRegression(Dataset):
    """uint8 images [N, H, W, C] and float targets [N] -> (normalised float [C, H, W], target); with `pad` > 0 a
    random crop of the image zero-padded by `pad` pixels (offsets from torch's global RNG, seeded by the engine)."""

    def __init__(self, images: np.ndarray, targets: np.ndarray, mean: np.ndarray, std: np.ndarray, pad: int = 0):
        self.pad = pad
        self.images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
        self.targets = torch.from_numpy(targets.astype(np.float32))
        self.mean = torch.from_numpy(mean.astype(np.float32)).view(-1, 1, 1)
        self.std = torch.from_numpy(std.astype(np.float32)).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        x = self.images[i].float()
        if self.pad:
            h, w = x.shape[-2:]
            top, left = torch.randint(0, 2 * self.pad + 1, (2,)).tolist()
            x = F.pad(x, (self.pad,) * 4)[:, top : top + h, left : left + w]
        return (x / 255.0 - self.mean) / self.std, self.targets[i]


def _rcf_sets(cfg: Config, ctx: RunContext) -> tuple[Dataset, Dataset, np.ndarray]:
    from benchmarks.data.rcf_mnist import build_rcf_mnist

    train_x, train_y = build_rcf_mnist("train", cfg.max_train_samples, cfg.data_root, ctx.cache_dir)
    test_x, test_y = build_rcf_mnist("test", cfg.max_eval_samples, cfg.data_root, ctx.cache_dir)
    pixels = train_x.reshape(-1, 3) / 255.0
    mean, std = pixels.mean(axis=0), pixels.std(axis=0)
    if cfg.crop_padding < 0:
        raise ValueError(f"task.crop_padding={cfg.crop_padding} must be >= 0 pixels (the official RCF-MNIST config: 2)")
    pad = cfg.crop_padding if cfg.augment else 0
    train = ArrayRegression(train_x, train_y, mean, std, pad)
    return train, ArrayRegression(test_x, test_y, mean, std), train_y


def _age_sets(cfg: Config, size: int) -> tuple[Dataset, Dataset, np.ndarray]:
    from torchvision import transforms as T

    from benchmarks.data.age_csv import AgeImages, find_csv

    if cfg.eval_split not in ("val", "test"):
        raise ValueError(f"task.eval_split={cfg.eval_split!r} is not allowed; choose one of: val, test")
    csv_path = find_csv(cfg.dataset, cfg.data_root, cfg.csv_name)
    normalize = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    plain = [T.Resize(size), T.CenterCrop(size)]
    train_tf = [T.RandomResizedCrop(size, scale=(0.5, 1.0)), T.RandomHorizontalFlip()] if cfg.augment else plain
    train = AgeImages(csv_path, "train", T.Compose(train_tf + normalize))
    test = AgeImages(csv_path, cfg.eval_split, T.Compose(plain + normalize))
    train_ages = train.ages
    if cfg.max_train_samples is not None and cfg.max_train_samples < len(train):
        keep = np.sort(np.random.default_rng(0).permutation(len(train))[: cfg.max_train_samples])
        train, train_ages = torch.utils.data.Subset(train, keep.tolist()), train_ages[keep]
    if cfg.max_eval_samples is not None and cfg.max_eval_samples < len(test):
        test = torch.utils.data.Subset(test, list(range(cfg.max_eval_samples)))
    return train, test, train_ages


# ------------------------------------------------------------------------------------------------- metrics
def regression_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """MAE and RMSE."""
    error = np.asarray(pred, dtype=np.float64) - np.asarray(target, dtype=np.float64)
    return {"mae": float(np.abs(error).mean()), "rmse": float(np.sqrt((error**2).mean()))}


def decade_mae(pred: np.ndarray, age: np.ndarray) -> dict[str, float]:
    """MAE per decade of the true age: {"mae_age_20_29": ...} for every decade present."""
    error = np.abs(np.asarray(pred, dtype=np.float64) - age)
    decade = (np.floor(age) // 10).astype(int)
    return {f"mae_age_{10 * d}_{10 * d + 9}": float(error[decade == d].mean()) for d in np.unique(decade)}


def shot_mae(pred: np.ndarray, age: np.ndarray, train_ages: np.ndarray) -> dict[str, float]:
    """MAE over test images whose integer age has > 100 (many), 20..100 (medium), < 20 (few) training images."""
    error = np.abs(np.asarray(pred, dtype=np.float64) - age)
    ages, counts = np.unique(np.floor(train_ages).astype(int), return_counts=True)
    count_of = dict(zip(ages.tolist(), counts.tolist()))
    shots = np.array([count_of.get(int(a), 0) for a in np.floor(age)])
    groups = {
        "many": shots > MANY_SHOT, "medium": (shots >= FEW_SHOT) & (shots <= MANY_SHOT), "few": shots < FEW_SHOT}
    return {f"mae_{name}": float(error[mask].mean()) for name, mask in groups.items() if mask.any()}


# ----------------------------------------------------------------------------------------------------- task
def setup(cfg: Config, ctx: RunContext) -> TaskSetup:
    """Build the data, the one-output model, the loss and the evaluation for one run."""
    from benchmarks.tasks.classification import build_model

    if cfg.dataset not in DATASETS:
        raise ValueError(f"task.dataset={cfg.dataset!r} is not allowed; choose one of: {', '.join(DATASETS)}")
    if cfg.loss not in LOSSES:
        raise ValueError(f"task.loss={cfg.loss!r} is not allowed; choose one of: {', '.join(LOSSES)}")
    is_age = cfg.dataset in AGE_DATASETS
    size = cfg.image_size or (224 if is_age else 32)
    if is_age:
        train_set, eval_set, train_targets = _age_sets(cfg, size)
    else:
        train_set, eval_set, train_targets = _rcf_sets(cfg, ctx)
    resize = not is_age and size != 32
    center, scale = 0.0, 1.0
    if cfg.standardize_target:
        center, scale = float(train_targets.mean()), float(train_targets.std()) or 1.0
    model = build_model(cfg, 1, size)  # the engine moves it to the device
    loss_fn = F.l1_loss if cfg.loss == "l1" else F.mse_loss

    def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Predictions in standardised units."""
        if resize:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return model(x).float().squeeze(1)

    def train_loss(model: nn.Module, batch) -> torch.Tensor:
        x, y = batch
        return loss_fn(predict(model, x), (y.float() - center) / scale)

    def batch_outputs(model: nn.Module, batch) -> dict[str, torch.Tensor]:
        x, y = batch
        return {"pred": predict(model, x) * scale + center, "target": y}

    def finish(out: dict[str, torch.Tensor]) -> dict[str, float]:
        pred, target = out["pred"].double().numpy(), out["target"].double().numpy()
        metrics = regression_metrics(pred, target)
        if is_age:
            metrics.update(shot_mae(pred, target, train_targets))
            metrics.update(decade_mae(pred, target))
        return metrics

    sharded = ShardedEvaluation(eval_set, cfg.eval_batch_size, None, finish, batch_outputs=batch_outputs,
                                num_workers=cfg.num_workers)

    notes = [f"loss {cfg.loss}; metrics in the target's unit ({'years' if is_age else 'degrees'})"]
    if cfg.dataset == "rcf_mnist":
        notes.append("RCF-MNIST built with fixed seeds (the original draws angles unseeded); backgrounds: "
                     + ("CIFAR-10 (as in openmixup)" if cfg.data_root else
                        "offline crops of scikit-image/scikit-learn photos, not CIFAR-10: not comparable with "
                        "published RCF-MNIST numbers"))
    if cfg.max_train_samples is not None:
        notes.append(f"training on a fixed subset of {len(train_set)} images")
    if cfg.max_eval_samples is not None:
        notes.append(f"evaluating on a fixed subset of {len(eval_set)} images")
    return TaskSetup(
        model=model,
        train_set=train_set,
        train_loss=train_loss,
        evaluate=lambda model: evaluate_sharded(sharded, model, ctx.device),
        sharded_evaluation=sharded,
        headline="mae",
        higher_is_better=False,
        dataset=cfg.dataset if cfg.dataset != "rcf_mnist" or cfg.data_root else "rcf_mnist (offline backgrounds)",
        notes=notes,
    )
