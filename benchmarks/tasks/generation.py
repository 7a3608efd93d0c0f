"""Image generation (recipes `*/generation`): DDPM with the project's U-Net (benchmarks/models/{unet,ddpm}.py).

Datasets: `fashion_mnist` (embedded default; Debian's files, padded to 32x32, one channel), `cifar10`
(`<data_root>/cifar-10-batches-py`) and `celeba` (`<data_root>/celeba`, 64x64), all scaled to [-1, 1].

Metrics:
* every epoch, `denoise_loss` (the headline, lower is better): DDPM's eps-prediction MSE on fixed held-out
  test images with fixed timesteps and noise, so epochs and methods are compared on exactly the same terms;
* at the end (`final_evaluate`, on the reported weights): `fid_samples` images sampled in chunks of
  `eval_batch_size`, chunk k from noise seeded by (`sample_seed`, k) (every method, seed and world size starts
  from the same noise; under torchrun each rank samples its share of the chunks), compared with the test set:
  `fid` with the standard Inception network when its weights are configured (see benchmarks/metrics/fid.py),
  otherwise `proxy_fid`, a Frechet distance on a small project-trained classifier's features (labelled as
  such, not comparable with published FIDs). An 8x8 grid of the first samples is saved as `samples.png` in the
  run dir.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from benchmarks.evaluation import ShardedEvaluation, evaluate_sharded, shard
from benchmarks.tasks.protocol import RunContext, TaskConfig, TaskSetup

DATASETS = ("fashion_mnist", "cifar10", "celeba")
# name -> UNet keyword arguments
UNETS: dict[str, dict] = {
    "unet-tiny": dict(base_channels=16, channel_mults=(1, 2, 2), blocks_per_level=1, attention_levels=(2,)),
    "unet-small": dict(base_channels=32, channel_mults=(1, 2, 2), blocks_per_level=1, attention_levels=(2,)),
    "unet-ddpm": dict(
        base_channels=128, channel_mults=(1, 2, 2, 2), blocks_per_level=2, attention_levels=(1,)
    ),
    # The DDIM repository's CelebA-64 network (configs/celeba.yml: ch 128, ch_mult 1-2-2-2-4, attention at 16 px)
    "unet-celeba64": dict(
        base_channels=128, channel_mults=(1, 2, 2, 2, 4), blocks_per_level=2, attention_levels=(2,)
    ),
}


@dataclass
class Config(TaskConfig):
    name: str = "generation"
    dataset: str = "fashion_mnist"  # fashion_mnist (offline) | cifar10 | celeba (task.data_root)
    model: str = "unet-small"  # one of UNETS; unet-ddpm is DDPM's CIFAR-10 network (35.7M parameters),
    #                            unet-celeba64 the DDIM repository's CelebA-64 one
    batch_size: int = 128
    eval_batch_size: int = 256
    image_size: int = 32  # training resolution (celeba is centre-cropped, then resized to this)
    dropout: float = 0.0  # U-Net dropout (DDPM: 0.1 on CIFAR-10)
    timesteps: int = 1000  # T of the diffusion
    beta_start: float = 1e-4  # beta_1 of the linear schedule (DDPM)
    beta_end: float = 0.02  # beta_T of the linear schedule (DDPM)
    sample_steps: Optional[int] = None  # evaluation sampler steps; None = all T (DDPM's ancestral sampler)
    sample_eta: float = 1.0  # 1 = DDPM-style stochastic steps; 0 = deterministic DDIM steps
    sample_seed: int = 0  # seed of the evaluation noise, shared by every run so methods see the same noise
    fid_samples: int = 10000  # generated images for the final FID
    fid_reference: str = "test"  # the FID's real images: test (the split held out) | train (the usual reference of
    #                              published CIFAR-10 / CelebA FIDs: the training images)
    fid_real_samples: Optional[int] = None  # reference images for the FID; None = the whole split
    inception_weights: Optional[str] = None  # torch-fidelity's Inception file for standard FID (or
    #                                          $SEMA_INCEPTION_WEIGHTS); None = proxy FID
    proxy_train_samples: Optional[int] = 20000  # training images for the proxy-FID classifier; None = all
    grid_size: int = 8  # the sample grid PNG is grid_size x grid_size images
    max_eval_samples: Optional[int] = 1000  # test images for the per-epoch denoising loss


class ImageTensors(Dataset):
    """In-memory images in [-1, 1], [N, C, H, W]; items are single images (optionally flipped at random)."""

    def __init__(self, images: torch.Tensor, hflip: bool = False):
        self.images, self.hflip = images, hflip

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        image = self.images[i]
        return image.flip(-1) if self.hflip and torch.rand(()) < 0.5 else image


class FirstOfPair(Dataset):
    """Items of a (image, target) dataset reduced to the image."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.dataset[i][0]


def _to_unit_range(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W] or [N, H, W, C] -> float32 [N, C, H, W] in [-1, 1]."""
    tensor = torch.from_numpy(images).float().div_(127.5).sub_(1.0)
    return tensor.unsqueeze(1) if tensor.ndim == 3 else tensor.permute(0, 3, 1, 2).contiguous()


def load_data(cfg: Config):
    """(train Dataset of images, test images [N, C, H, W], proxy-classifier data factory, dataset name)."""
    if cfg.dataset == "fashion_mnist":
        from benchmarks.data.fashion_mnist import load_fashion_mnist

        if cfg.image_size != 32:
            raise ValueError(
                f"fashion_mnist is padded to 32x32; image_size={cfg.image_size} is not supported"
            )
        x_train, y_train = load_fashion_mnist("train", cfg.data_root)
        x_test, _ = load_fashion_mnist("test", cfg.data_root)
        pad = ((0, 0), (2, 2), (2, 2))
        train, test = _to_unit_range(np.pad(x_train, pad)), _to_unit_range(np.pad(x_test, pad))
        labels = torch.from_numpy(y_train)
        return ImageTensors(train), test, lambda n: (train[:n], labels[:n], False), "fashion_mnist-32"
    if cfg.dataset == "cifar10":
        from benchmarks.data.cifar import load_cifar

        if cfg.image_size != 32:
            raise ValueError(f"cifar10 images are 32x32; image_size={cfg.image_size} is not supported")
        x_train, y_train = load_cifar("cifar10", "train", cfg.data_root)
        x_test, _ = load_cifar("cifar10", "test", cfg.data_root)
        train, labels = _to_unit_range(x_train), torch.from_numpy(y_train)
        return (
            ImageTensors(train, hflip=True),
            _to_unit_range(x_test),
            lambda n: (train[:n], labels[:n], False),
            "cifar10",
        )
    if cfg.dataset == "celeba":
        from benchmarks.data.celeba import celeba_split

        train = celeba_split(cfg.data_root, "train", cfg.image_size, hflip=True)
        test = celeba_split(cfg.data_root, "test", cfg.image_size, hflip=False)
        n_test = len(test) if cfg.fid_real_samples is None else min(cfg.fid_real_samples, len(test))
        test_images = torch.stack([test[i][0] for i in range(n_test)])
        plain_train = celeba_split(cfg.data_root, "train", cfg.image_size, hflip=False)

        def proxy_data(n):
            items = [plain_train[i] for i in range(min(n, len(plain_train)))]
            return torch.stack([x for x, _ in items]), torch.stack([y for _, y in items]), True

        return FirstOfPair(train), test_images, proxy_data, f"celeba-{cfg.image_size}"
    raise ValueError(f"unknown generation dataset {cfg.dataset!r}; allowed: {', '.join(DATASETS)}")


def save_grid(images: torch.Tensor, path, nrow: int) -> None:
    """Write images in [-1, 1] as one PNG grid."""
    from torchvision.utils import save_image

    path.parent.mkdir(parents=True, exist_ok=True)
    save_image((images.float().clamp(-1, 1) + 1) / 2, str(path), nrow=nrow, padding=2)


def setup(cfg: Config, ctx: RunContext) -> TaskSetup:
    if cfg.model not in UNETS:
        raise ValueError(f"unknown generation model {cfg.model!r}; allowed: {', '.join(UNETS)}")
    from benchmarks.metrics import fid
    from benchmarks.models.ddpm import Diffusion
    from benchmarks.models.unet import UNet

    train_set, test_images, proxy_data, dataset_name = load_data(cfg)
    if cfg.max_train_samples is not None:
        train_set = torch.utils.data.Subset(train_set, range(min(cfg.max_train_samples, len(train_set))))
    channels = test_images.shape[1]
    model = UNet(channels, dropout=cfg.dropout, **UNETS[cfg.model])
    diffusion = Diffusion(cfg.timesteps, cfg.beta_start, cfg.beta_end)
    inception = fid.inception_weights_path(cfg.inception_weights)  # fails early if configured but absent

    # The held-out denoising problem: fixed images, timesteps and noise (drawn once, on the CPU).
    noise_gen = torch.Generator().manual_seed(cfg.sample_seed)
    n_val = len(test_images) if cfg.max_eval_samples is None else min(cfg.max_eval_samples, len(test_images))
    val_x0 = test_images[:n_val]
    val_t = torch.randint(0, cfg.timesteps, (n_val,), generator=noise_gen)
    val_noise = torch.randn(val_x0.shape, generator=noise_gen)
    if cfg.fid_reference not in ("test", "train"):
        raise ValueError(f"task.fid_reference={cfg.fid_reference!r} is not allowed; choose one of: test, train")
    n_pool = len(test_images) if cfg.fid_reference == "test" else len(train_set)
    n_real = n_pool if cfg.fid_real_samples is None else min(cfg.fid_real_samples, n_pool)

    def train_loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        return diffusion.loss(model, batch)

    def batch_sums(model: nn.Module, batch) -> dict[str, torch.Tensor]:
        x0, t, noise = batch
        return {"loss": diffusion.loss(model, x0, t, noise).double() * len(x0),
                "n": torch.tensor(len(x0), device=x0.device)}

    sharded = ShardedEvaluation(TensorDataset(val_x0, val_t, val_noise), cfg.eval_batch_size, batch_sums,
                                lambda t: {"denoise_loss": t["loss"] / t["n"]})
    shape = (channels, cfg.image_size, cfg.image_size)
    n_chunks = -(-cfg.fid_samples // cfg.eval_batch_size)
    # the training images come unflipped from the same source the proxy classifier trains on
    real = test_images[:n_real] if cfg.fid_reference == "test" else proxy_data(n_real)[0]
    proxy_key = f"{dataset_name}_c{channels}_n{cfg.proxy_train_samples or len(train_set)}"

    def sample_chunk(model: nn.Module, k: int) -> torch.Tensor:
        # Chunk k's noise comes from its own seed: the same samples whatever the world size.
        n = min(cfg.eval_batch_size, cfg.fid_samples - k * cfg.eval_batch_size)
        generator = torch.Generator().manual_seed(cfg.sample_seed * 1_000_003 + k)
        return diffusion.sample(model, (n, *shape), generator, cfg.sample_steps, cfg.sample_eta, ctx.device).float()

    def proxy_network():
        # Trained once and cached; under torchrun rank 0 trains it while the others wait, then they load it.
        make = lambda: fid.cached_proxy(ctx.cache_dir, proxy_key,  # noqa: E731
                                        lambda: proxy_data(cfg.proxy_train_samples or len(train_set)))
        if ctx.world_size == 1:
            return make()
        net = make() if ctx.rank == 0 else None
        torch.distributed.barrier()
        return net if net is not None else make()

    def final_evaluate(model: nn.Module) -> dict[str, float]:
        # Each rank samples its share of the chunks and scores them with its share of the real images; only
        # features (or the metric's sums) cross ranks, never the images. Every rank returns the same FID.
        mine = [sample_chunk(model, k).cpu() for k in shard(n_chunks, ctx.rank, ctx.world_size)]
        fake = torch.cat(mine) if mine else torch.empty(0, *shape)
        part = shard(len(real), ctx.rank, ctx.world_size)
        real_part = real[part.start : part.stop]
        if ctx.rank == 0:
            save_grid(fake[: cfg.grid_size**2], ctx.out_dir / "samples.png", cfg.grid_size)
        if inception is not None:
            return {"fid": fid.inception_fid(real_part, fake, inception, device=ctx.device)}
        proxy = proxy_network()
        features = [fid.proxy_features(proxy, images) for images in (real_part, fake)]
        if ctx.world_size > 1:  # [N, 128] float64 per rank, in rank order = chunk order
            everyone: list = [None] * ctx.world_size
            torch.distributed.all_gather_object(everyone, features)
            features = [np.concatenate([f[i] for f in everyone]) for i in (0, 1)]
        stats_real, stats_fake = (fid.feature_statistics(f) for f in features)
        return {"proxy_fid": fid.frechet_distance(*stats_real, *stats_fake)}

    def analysis_batches():
        generator = torch.Generator().manual_seed(ctx.seed)
        order = torch.randperm(len(train_set), generator=generator)[: 2 * cfg.batch_size].tolist()
        return [
            torch.stack([train_set[i] for i in order[k : k + cfg.batch_size]])
            for k in range(0, len(order), cfg.batch_size)
        ]

    sampler = (
        f"DDPM ancestral, {cfg.timesteps} steps"
        if cfg.sample_steps in (None, cfg.timesteps)
        else f"{cfg.sample_steps} strided steps, eta {cfg.sample_eta}"
    )
    n_params = sum(p.numel() for p in model.parameters())
    return TaskSetup(
        model=model,
        train_set=train_set,
        train_loss=train_loss,
        evaluate=lambda model: evaluate_sharded(sharded, model, ctx.device),
        sharded_evaluation=sharded,
        final_evaluate=final_evaluate,
        final_evaluate_on_every_rank=True,
        headline="denoise_loss",
        higher_is_better=False,
        dataset=dataset_name,
        analysis_batches=analysis_batches,
        notes=[
            f"DDPM, linear betas {cfg.beta_start}..{cfg.beta_end}, T={cfg.timesteps}; {cfg.model} "
            f"({n_params / 1e6:.2f}M parameters); headline: held-out denoising MSE on {n_val} test images",
            (
                "FID with the standard Inception network"
                if inception is not None
                else "proxy_fid: Frechet distance on a project-trained small classifier's features, "
                "NOT comparable with published FID"
            )
            + f"; {cfg.fid_samples} samples ({sampler}, seed {cfg.sample_seed}) vs {n_real} {cfg.fid_reference} "
            "images",
        ],
    )
