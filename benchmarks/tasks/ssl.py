"""Self-supervised learning: BYOL, MoCo v2, MoCo v3 or SimSiam pre-training; k-NN and linear-probe accuracy on frozen features.

    sema-bench recipe=quick/ssl method=sema                     # Fashion-MNIST without labels, small CNN, CPU
    sema-bench recipe=paper/ssl method=sema task.data_root=/data   # BYOL, CIFAR-10, ResNet-18 at 224 px, GPU

Datasets (`task.dataset`): `fashion_mnist` (embedded default: the 60k training images without labels for
pre-training; labels only for the probes), `cifar10`, `cifar100` (torchvision layout), `stl10` (unlabelled + train
for pre-training, 96 px), `imagefolder` (`<root>/train/<class>/*`, `<root>/val/<class>/*`, e.g. ImageNet).
Models (`task.model`): `small_cnn` / `tiny_cnn` (CPU) or any timm name (resnet18, resnet50, ...; CIFAR stem for
inputs <= 64 px), shared with the classification task.

Weight averaging and the teacher. The WA method under test (EMA, SEMA, ...) averages the **online** network
(`averaged_module = model.online`: backbone + projector + predictor); the algorithm's own momentum teacher keeps its
schedule (cosine from 0.996 (BYOL) / 0.99 (MoCo v3) to 1 over the run; MoCo v2: constant 0.999; `after_step`). With
`task.teacher_switch=true` a SEMA switch also copies the (just switched) online network into the teacher, as the
official openmixup SSL code does on its switch iterations. `task.teacher_switch_every=N` is that official variant
itself (openmixup's CosineHook with switch_ema): every N steps the momentum update is replaced by the copy online ->
teacher, whatever the WA method does. SimSiam has no teacher.

Evaluation (both computed every epoch on the same frozen backbone features, no augmentation):
* `knn_top1`: weighted k-NN (k=200, temperature 0.1, cosine similarity; Wu et al. 2018) of the test images against
  the labelled training images;
* `linear_top1` (headline): a linear classifier on standardised features, trained to convergence by L-BFGS (multinomial
  logistic regression, small L2). This "frozen-feature" probe is cheaper than the papers' 90-100-epoch probes with
  augmentation and reads a few points lower; it is evaluated every epoch so that `best` and learning curves exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import ConcatDataset, Dataset

from benchmarks.evaluation import ShardedEvaluation, evaluate_sharded
from benchmarks.tasks.protocol import RunContext, TaskConfig, TaskSetup

# name -> (number of classes, image side the loader delivers, mean, std)
DATASETS = {
    "fashion_mnist": (10, 32, (0.2860,) * 3, (0.3530,) * 3),
    "cifar10": (10, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": (100, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "stl10": (10, 96, (0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713)),
    "imagefolder": (None, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
ALGORITHMS = ("byol", "mocov2", "mocov3", "simsiam")
SUBSET_SEED = 0  # fixed subsets (max_*_samples, probe_train_samples): the same for every seed and method


@dataclass
class Config(TaskConfig):
    """Self-supervised pre-training with frozen-feature probes."""

    name: str = "ssl"
    dataset: str = "fashion_mnist"  # fashion_mnist | cifar10 | cifar100 | stl10 | imagefolder
    model: str = "small_cnn"  # backbone: small_cnn | tiny_cnn | any timm name (random init)
    algorithm: str = "byol"  # byol | mocov2 | mocov3 | simsiam
    hidden_dim: int = 512  # projector/predictor hidden width (4096 in BYOL and MoCo v3, 2048 in SimSiam, MoCo v2)
    out_dim: int = 128  # projection width (256 in BYOL and MoCo v3, 2048 in SimSiam, 128 in MoCo v2)
    temperature: Optional[float] = None  # InfoNCE temperature; null = 0.2 MoCo v2, 1.0 MoCo v3 (its ResNet value)
    queue_size: int = 65536  # MoCo v2's queue of negative keys
    teacher_momentum: Optional[float] = None  # teacher momentum at step 0; null = 0.996 BYOL, 0.999 MoCo v2,
    #                                           0.99 MoCo v3
    teacher_schedule: Optional[str] = None  # cosine (to 1 at the end of training) | constant; null = the paper's:
    #                                         cosine for BYOL and MoCo v3, constant for MoCo v2
    teacher_switch: bool = False  # a WA switch also copies the online network into the teacher
    teacher_switch_every: Optional[int] = None  # openmixup's SSL switch (CosineHook switch_ema): every n steps the
    #                                             momentum update is replaced by teacher <- online; null = off
    image_size: Optional[int] = None  # side of the training crops; null = the dataset's native size
    min_crop_scale: float = 0.2  # random-resized-crop minimum area (0.2 CIFAR recipes, 0.08 ImageNet)
    saturation: Optional[float] = None  # colour-jitter saturation strength; null = 0.4 MoCo v2, 0.2 the others
    hue: float = 0.0  # colour-jitter hue strength (0.1 in the official BYOL / MoCo v2 configs; 0 = off, as CIFAR
    #                   recipes usually do)
    blur_p: Optional[list[float]] = None  # Gaussian-blur probability of [view 1, view 2] (official BYOL [1.0, 0.1],
    #                                       MoCo v2 [0.5, 0.5]); null = [0, 0]
    solarize_p: Optional[list[float]] = None  # solarisation probability of [view 1, view 2]; null = BYOL's [0, 0.2],
    #                                           [0, 0] for the others
    cifar_stem: Optional[bool] = None  # 3x3 stride-1 stem for timm ResNet/ConvNeXt; null = when image size <= 64
    drop_path: float = 0.0  # stochastic depth of timm backbones
    probe_train_samples: Optional[int] = None  # labelled training images for the k-NN bank and the linear probe;
    #                                            null = all
    knn_k: int = 200  # neighbours in the k-NN classifier
    knn_temperature: float = 0.1  # temperature of the k-NN vote weights exp(similarity / T)
    probe_max_iter: int = 100  # L-BFGS iterations of the linear probe
    probe_l2: float = 1e-4  # L2 penalty of the linear probe (on the weights, times 1/2)


# ----------------------------------------------------------------------------------------------------- data
class Images(Dataset):
    """uint8 images [N, H, W, C] -> uint8 [C, H, W] tensors (no labels: pre-training)."""

    def __init__(self, images: np.ndarray):
        self.images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i].contiguous()


class Labelled(Dataset):
    """uint8 images [N, H, W, C] and labels [N] -> (uint8 [C, H, W], label)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images = Images(images)
        self.labels = torch.from_numpy(labels.astype(np.int64))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], self.labels[i]


class Tagged(Dataset):
    """Items (image, label) of a labelled set -> (image, label, tag): tells two concatenated sets apart."""

    def __init__(self, dataset: Dataset, tag: int):
        self.dataset, self.tag = dataset, tag

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        x, y = self.dataset[i]
        return x, y, self.tag


class DropLabels(Dataset):
    """A labelled dataset's images only (pre-training on ImageFolder)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.dataset[i][0]


def _subset_index(n: int, cap: Optional[int]) -> Optional[np.ndarray]:
    if cap is None or cap >= n:
        return None
    return np.sort(np.random.default_rng(SUBSET_SEED).permutation(n)[:cap])


def _cut(dataset: Dataset, cap: Optional[int]) -> Dataset:
    keep = _subset_index(len(dataset), cap)
    return dataset if keep is None else torch.utils.data.Subset(dataset, keep.tolist())


def _take(images: np.ndarray, labels: Optional[np.ndarray], cap: Optional[int]):
    keep = _subset_index(len(images), cap)
    if keep is None:
        return images, labels
    return images[keep], labels[keep] if labels is not None else None


def _arrays(cfg: Config, split: str) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Images as stored ([N, H, W, C] uint8, or [N, 28, 28] for Fashion-MNIST: see `_as_rgb`) and labels."""
    from benchmarks.data import cifar, fashion_mnist, stl10

    if cfg.dataset == "fashion_mnist":
        return fashion_mnist.load_fashion_mnist(split, cfg.data_root)
    if cfg.dataset == "stl10":
        return stl10.load_stl10(split, cfg.data_root)
    return cifar.load_cifar(cfg.dataset, split, cfg.data_root)


def _as_rgb(cfg: Config, images: np.ndarray) -> np.ndarray:
    """Fashion-MNIST is padded to 32x32 RGB after subsetting (converting all 60k first would cost 184 MB)."""
    from benchmarks.data import fashion_mnist

    return fashion_mnist.to_rgb32(images) if cfg.dataset == "fashion_mnist" else images


def build_datasets(cfg: Config) -> tuple[Dataset, Dataset, Dataset, int]:
    """(pre-training images, labelled probe-train set, labelled test set, number of classes)."""
    if cfg.dataset == "imagefolder":
        from torchvision import transforms as T

        from benchmarks.data.imagenet import load_imagenet

        size = DATASETS["imagefolder"][1]
        to_tensor = T.Compose([T.Resize(int(size * 256 / 224)), T.CenterCrop(size), T.PILToTensor()])
        train = load_imagenet("train", cfg.data_root, to_tensor)
        test = load_imagenet("val", cfg.data_root, to_tensor)
        return (_cut(DropLabels(train), cfg.max_train_samples), _cut(train, cfg.probe_train_samples),
                _cut(test, cfg.max_eval_samples), len(train.classes))
    train_x, train_y = _arrays(cfg, "train")
    pretrain_x = train_x
    if cfg.dataset == "stl10":  # STL-10 pre-trains on the 100k unlabelled images plus the 5k labelled ones
        pretrain_x = np.concatenate([_arrays(cfg, "unlabeled")[0], train_x])
    pretrain = Images(_as_rgb(cfg, _take(pretrain_x, None, cfg.max_train_samples)[0]))
    probe_x, probe_y = _take(train_x, train_y, cfg.probe_train_samples)
    test_x, test_y = _take(*_arrays(cfg, "test"), cfg.max_eval_samples)
    probe_train = Labelled(_as_rgb(cfg, probe_x), probe_y)
    test = Labelled(_as_rgb(cfg, test_x), test_y)
    return pretrain, probe_train, test, DATASETS[cfg.dataset][0]


# ------------------------------------------------------------------------------------------------- metrics
@torch.no_grad()
def knn_predict(
    bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor, num_classes: int, k: int = 200,
    temperature: float = 0.1, chunk: int = 1024,
) -> torch.Tensor:
    """Weighted k-NN labels of `queries` against `bank` (cosine similarity; vote weight exp(sim / temperature))."""
    bank = F.normalize(bank.float(), dim=1)
    k = min(k, len(bank))
    predictions = []
    for start in range(0, len(queries), chunk):
        q = F.normalize(queries[start : start + chunk].float(), dim=1)
        similarity, index = (q @ bank.t()).topk(k, dim=1)
        votes = torch.zeros(len(q), num_classes, device=q.device)
        votes.scatter_add_(1, bank_labels[index], torch.exp(similarity / temperature))
        predictions.append(votes.argmax(dim=1))
    return torch.cat(predictions)


def linear_probe(
    train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor, num_classes: int,
    max_iter: int = 100, l2: float = 1e-4,
) -> torch.Tensor:
    """Labels predicted for `test_features` by multinomial logistic regression fitted with L-BFGS (zero init).

    Features are standardised with the training features' mean and std. Zero initialisation of a convex problem
    makes the result independent of any random state (the probe must not disturb the training RNG stream).
    """
    with torch.enable_grad():
        x = train_features.float()
        mean, std = x.mean(dim=0), x.std(dim=0).clamp_min(1e-6)
        x = (x - mean) / std
        weight = torch.zeros(x.shape[1], num_classes, device=x.device, requires_grad=True)
        bias = torch.zeros(num_classes, device=x.device, requires_grad=True)
        optimizer = torch.optim.LBFGS([weight, bias], max_iter=max_iter, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = F.cross_entropy(x @ weight + bias, train_labels) + 0.5 * l2 * weight.pow(2).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
    with torch.no_grad():
        return (((test_features.float() - mean) / std) @ weight + bias).argmax(dim=1)


# ----------------------------------------------------------------------------------------------------- task
def _backbone_and_dim(cfg: Config, image_size: int) -> tuple[nn.Module, int]:
    """The classification task's model builder, with the classifier removed."""
    from benchmarks.tasks.classification import build_model

    net = build_model(cfg, 1, image_size)
    if hasattr(net, "reset_classifier"):  # timm models
        net.reset_classifier(0)
        return net, net.num_features
    dim = net.head.in_features  # project CNNs: features -> head
    net.head = nn.Identity()
    return net, dim


def setup(cfg: Config, ctx: RunContext) -> TaskSetup:
    """Build the data, the SSL model (online + teacher), the loss, the teacher schedule and the probes."""
    from benchmarks.data.ssl_views import ViewConfig, augment
    from benchmarks.models import ssl_heads

    if cfg.dataset not in DATASETS:
        raise ValueError(f"task.dataset={cfg.dataset!r} is not allowed; choose one of: {', '.join(DATASETS)}")
    if cfg.algorithm not in ALGORITHMS:
        raise ValueError(
            f"task.algorithm={cfg.algorithm!r} is not allowed; choose one of: {', '.join(ALGORITHMS)}")
    if cfg.teacher_schedule not in (None, "cosine", "constant"):
        raise ValueError(
            f"task.teacher_schedule={cfg.teacher_schedule!r} is not allowed; choose one of: cosine, constant")
    if (cfg.teacher_switch or cfg.teacher_switch_every) and cfg.algorithm == "simsiam":
        raise ValueError("task.teacher_switch / teacher_switch_every need a teacher; SimSiam has none "
                         "(use byol or mocov3)")
    for key in ("blur_p", "solarize_p"):
        value = getattr(cfg, key)
        if value is not None and (len(value) != 2 or not all(0 <= v <= 1 for v in value)):
            raise ValueError(f"task.{key}={list(value)} must be two probabilities in [0, 1], one per view")
    if not 0 <= cfg.hue <= 0.5:
        raise ValueError(f"task.hue={cfg.hue} must be in [0, 0.5] (a fraction of the colour circle)")
    if cfg.queue_size < 1:
        raise ValueError(f"task.queue_size={cfg.queue_size} must be a positive number of keys (MoCo v2: 65536)")
    if cfg.teacher_switch_every is not None and cfg.teacher_switch_every < 1:
        raise ValueError(f"task.teacher_switch_every={cfg.teacher_switch_every} must be a positive number of steps "
                         "or null")
    _, native, mean, std = DATASETS[cfg.dataset]
    image_size = cfg.image_size or native
    pretrain, probe_train, test, num_classes = build_datasets(cfg)

    backbone, feature_dim = _backbone_and_dim(cfg, image_size)
    model = ssl_heads.SSLModel(backbone, feature_dim, cfg.algorithm, cfg.hidden_dim, cfg.out_dim, cfg.temperature,
                                 cfg.queue_size)
    mean_t = torch.tensor(mean, device=ctx.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=ctx.device).view(1, -1, 1, 1)
    saturation = cfg.saturation if cfg.saturation is not None else 0.4 if cfg.algorithm == "mocov2" else 0.2
    blur = cfg.blur_p or [0.0, 0.0]
    solarize = cfg.solarize_p or ([0.0, 0.2] if cfg.algorithm == "byol" else [0.0, 0.0])
    views = tuple(ViewConfig(image_size, cfg.min_crop_scale, saturation=saturation, hue=cfg.hue, blur_p=blur[i],
                             solarize_p=solarize[i]) for i in range(2))

    def train_loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        x = batch.float() / 255.0
        v1, v2 = ((augment(x, v) - mean_t) / std_t for v in views)
        return model(v1, v2)  # SSLModel.forward with two views = the loss (works through DDP wrappers)

    def prepare(x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255.0
        if x.shape[-1] != image_size:
            x = F.interpolate(x, size=image_size, mode="bilinear", align_corners=False, antialias=True)
        return (x - mean_t) / std_t

    # Evaluation: frozen features of the probe-train images (the bank) and the test images (the queries), one
    # pass over both, sharded under torchrun; every rank then fits the same probes on the gathered features.
    probe_and_test = ConcatDataset([Tagged(probe_train, 0), Tagged(test, 1)])

    def batch_outputs(model: nn.Module, batch) -> dict[str, torch.Tensor]:
        x, y, is_test = batch
        return {"features": model.online.backbone(prepare(x)).float(), "labels": y, "is_test": is_test}

    def finish(out: dict[str, torch.Tensor]) -> dict[str, float]:
        feats, labels = out["features"].to(ctx.device), out["labels"].to(ctx.device)
        queries = out["is_test"].to(ctx.device).bool()
        bank, bank_labels, labels = feats[~queries], labels[~queries], labels[queries]
        with torch.autocast(ctx.device.type, enabled=False):
            knn = knn_predict(bank, bank_labels, feats[queries], num_classes, cfg.knn_k, cfg.knn_temperature)
            linear = linear_probe(bank, bank_labels, feats[queries], num_classes, cfg.probe_max_iter, cfg.probe_l2)
        return {
            "knn_top1": 100.0 * (knn == labels).float().mean().item(),
            "linear_top1": 100.0 * (linear == labels).float().mean().item(),
        }

    sharded = ShardedEvaluation(probe_and_test, cfg.eval_batch_size, None, finish, batch_outputs=batch_outputs,
                                num_workers=cfg.num_workers)

    after_step = on_switch = None
    if model.teacher is not None:
        base = ssl_heads.DEFAULT_MOMENTUM[cfg.algorithm] if cfg.teacher_momentum is None else cfg.teacher_momentum
        total = ctx.total_steps(len(pretrain))  # the run's optimizer steps: the cosine schedule reaches 1 there
        schedule = cfg.teacher_schedule or ssl_heads.DEFAULT_SCHEDULE[cfg.algorithm]
        cosine = schedule == "cosine" and total > 0

        def after_step(step: int) -> None:
            # `step` = optimizer steps done; the momentum for this update is the schedule's value before it.
            if cfg.teacher_switch_every and step % cfg.teacher_switch_every == 0:
                ssl_heads.copy_online_to_teacher(model)  # openmixup's switch iterations: no momentum update
                return
            momentum = ssl_heads.cosine_momentum(base, step - 1, total) if cosine else base
            ssl_heads.momentum_update(model, momentum)

        if cfg.teacher_switch:
            def on_switch() -> None:
                ssl_heads.copy_online_to_teacher(model)

    notes = [f"{cfg.algorithm}; k-NN and linear probe (L-BFGS logistic regression) on frozen features"]
    if cfg.dataset == "fashion_mnist":
        notes.append("Fashion-MNIST stands in for CIFAR offline: pre-trained without labels; labels only for probes")
    teacher = "a WA switch also copies online -> teacher (openmixup)" if cfg.teacher_switch else "switches skip it"
    notes.append(f"the WA method averages the online network; the teacher keeps its momentum schedule; {teacher}")
    for label, cap, data in (("pre-training", cfg.max_train_samples, pretrain),
                             ("probe training", cfg.probe_train_samples, probe_train),
                             ("test", cfg.max_eval_samples, test)):
        if cap is not None:
            notes.append(f"{label} on a fixed subset of {len(data)} images")
    return TaskSetup(
        model=model,
        train_set=pretrain,
        train_loss=train_loss,
        evaluate=lambda model: evaluate_sharded(sharded, model, ctx.device),
        sharded_evaluation=sharded,
        headline="linear_top1",
        higher_is_better=True,
        dataset=cfg.dataset,
        averaged_module=model.online,
        after_step=after_step,
        on_switch=on_switch,
        param_groups=lambda m: [{"params": [p for p in m.online.parameters() if p.requires_grad]}],
        notes=notes,
    )
