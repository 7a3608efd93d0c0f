"""Frechet distance between feature distributions (FID, Heusel et al. 2017), with two feature extractors.

    FD = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2))

* Standard FID: the TF-ported Inception-v3 "pt_inception-2015-12-05" (2048-d pool features) through
  torchmetrics, which needs the `torch-fidelity` package and the weights file on disk (nothing is ever
  downloaded). Put `weights-inception-2015-12-05-6726825d.pth` (torch-fidelity's release asset) anywhere and
  set `task.inception_weights=/path/to/it` or `$SEMA_INCEPTION_WEIGHTS`, or leave it in torch hub's cache
  (`$TORCH_HOME/hub/checkpoints/`, default ~/.cache/torch/hub/checkpoints/); `pip install torch-fidelity`.
* Proxy FID (offline default): the same distance on the penultimate features of a small CNN classifier that
  the project trains on the same dataset's training labels (`ProxyFeatures`, trained once, deterministically,
  and cached). Its numbers rank models on that data but are NOT comparable with published FIDs; results label
  it `proxy_fid`.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

INCEPTION_ENV = "SEMA_INCEPTION_WEIGHTS"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
PROXY_VERSION = 2  # bump when the proxy network or its training recipe changes (invalidates cached weights)


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and unbiased covariance [D, D] of [N, D] features, in float64."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"need [N >= 2, D] features, got shape {features.shape}")
    return features.mean(0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance of two Gaussians; matrix square root by scipy, as the reference implementations."""
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(
            f"shape mismatch: means {mu1.shape} vs {mu2.shape}, covariances {sigma1.shape} vs {sigma2.shape}"
        )
    with warnings.catch_warnings():  # fewer samples than feature dimensions make the product singular
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():  # regularise, as pytorch-fid does
            offset = np.eye(sigma1.shape[0]) * 1e-6
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


# ---------------------------------------------------------------------------------------------- proxy network
class ProxyFeatures(nn.Module):
    """A small CNN classifier for [-1, 1] images; `features` gives its 128-d penultimate activations."""

    def __init__(self, in_channels: int, num_outputs: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1),
            nn.BatchNorm2d(128),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(128, num_outputs)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def train_proxy(
    images: torch.Tensor,
    targets: torch.Tensor,
    multilabel: bool,
    epochs: int = 2,
    batch_size: int = 128,
    seed: int = 0,
) -> ProxyFeatures:
    """Train `ProxyFeatures` on [N, C, H, W] images in [-1, 1] (class ids, or {0,1} attributes)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        num_outputs = targets.shape[1] if multilabel else int(targets.max()) + 1
        net = ProxyFeatures(images.shape[1], num_outputs)
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
    net.train()
    with torch.enable_grad():  # callers may be inside the engine's no_grad evaluation
        for _ in range(epochs):
            order = torch.randperm(len(images), generator=generator)
            for start in range(0, len(images) - batch_size + 1, batch_size):
                idx = order[start : start + batch_size]
                logits = net(images[idx])
                loss = (
                    F.binary_cross_entropy_with_logits(logits, targets[idx].float())
                    if multilabel
                    else F.cross_entropy(logits, targets[idx])
                )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    recalibrate_batchnorm(net, images[:2048])
    return net.eval()


@torch.no_grad()
def recalibrate_batchnorm(net: nn.Module, images: torch.Tensor, batch_size: int = 512) -> None:
    """Recompute BatchNorm running statistics as exact averages over `images` at the final weights.

    The running averages kept during a short training run lag behind the weights (here: 85% test accuracy in
    train mode, 70% in eval mode before recalibration); exact statistics make eval mode match.
    """
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average = the exact mean over the batches below
    was_training = net.training
    net.train()
    for i in range(0, len(images), batch_size):
        net(images[i : i + batch_size])
    for m in norms:
        m.momentum = 0.1
    net.train(was_training)



def cached_proxy(
    cache_dir: Path, key: str, make_data: Callable[[], tuple[torch.Tensor, torch.Tensor, bool]]
) -> ProxyFeatures:
    """Load `<cache_dir>/fid_proxy/<key>_v<PROXY_VERSION>.pt`, or train on `make_data()` and save it."""
    path = Path(cache_dir) / "fid_proxy" / f"{key}_v{PROXY_VERSION}.pt"
    if path.is_file():
        state = torch.load(path, weights_only=True)
        net = ProxyFeatures(state["in_channels"], state["num_outputs"])
        net.load_state_dict(state["weights"])
        return net.eval()
    images, targets, multilabel = make_data()
    net = train_proxy(images, targets, multilabel)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(
        {"in_channels": images.shape[1], "num_outputs": net.head.out_features, "weights": net.state_dict()},
        tmp,
    )
    tmp.replace(path)  # atomic: concurrent runs never read a half-written file
    return net


@torch.no_grad()
def proxy_features(net: ProxyFeatures, images: torch.Tensor, batch_size: int = 500) -> np.ndarray:
    """[N, 128] float64 features of [N, C, H, W] images in [-1, 1]."""
    net.eval()
    return (
        torch.cat(
            [net.features(images[i : i + batch_size].float()) for i in range(0, len(images), batch_size)]
        )
        .double()
        .numpy()
    )


# ---------------------------------------------------------------------------------------------- Inception FID
def inception_weights_path(configured: Optional[str]) -> Optional[Path]:
    """The Inception weights file for standard FID, or None for the proxy.

    Looked up in: `configured` (task.inception_weights), $SEMA_INCEPTION_WEIGHTS, then torch hub's cache
    (`$TORCH_HOME/hub/checkpoints/`, where torch-fidelity itself keeps the file). A path that is configured
    but absent, or configured without torch-fidelity installed, is an error: a run never silently falls back
    to the proxy, and it fails before training rather than after.
    """
    fidelity = importlib.util.find_spec("torch_fidelity") is not None
    value = configured or os.environ.get(INCEPTION_ENV)
    if not value:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
        return cached if cached.is_file() and fidelity else None
    path = Path(value).expanduser()
    if path.is_dir():
        path = path / INCEPTION_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"Inception weights not found at {path}. Put torch-fidelity's {INCEPTION_FILE} "
            f"there, or unset task.inception_weights / ${INCEPTION_ENV} to use the proxy FID"
        )
    if not fidelity:
        raise ImportError(f"standard FID with {path} needs torch-fidelity: pip install torch-fidelity")
    return path


@torch.no_grad()
def inception_fid(real: torch.Tensor, fake: torch.Tensor, weights: Path, batch_size: int = 100) -> float:
    """Standard FID (2048-d Inception pool features) of image sets in [-1, 1], through torchmetrics."""
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError as err:  # pragma: no cover - torchmetrics is in the bench extras
        raise ImportError(
            "standard FID needs torchmetrics and torch-fidelity: pip install torch-fidelity"
        ) from err
    metric = FrechetInceptionDistance(
        feature=2048, normalize=True, feature_extractor_weights_path=str(weights)
    )
    for images, is_real in ((real, True), (fake, False)):
        for i in range(0, len(images), batch_size):
            batch = (images[i : i + batch_size].float().clamp(-1, 1) + 1) / 2
            if batch.shape[1] == 1:
                batch = batch.repeat(1, 3, 1, 1)
            metric.update(batch, real=is_real)
    return float(metric.compute())
