"""Training batches cut and augmented on the run's device, a whole batch at a time (`trainer.data_on_device`).

An in-memory image dataset whose uint8 pixels fit on the GPU does not need a DataLoader: the engine keeps the
pixels there and, for each batch of indices its sampler draws (the same indices, in the same order, as the
DataLoader path), asks the dataset for the finished batch:

    class MyImages(Dataset):                       # also satisfies the BatchesOnDevice protocol
        def on_device(self, device) -> "MyImages": ...            # a copy whose tensors live on `device`
        def batch(self, indices, generator) -> Batch: ...          # the batch, augmented with `generator`

`generator` lives on the device and is reseeded by the engine at every epoch from (seed, epoch, rank), so a run
is reproducible for a seed, and a resume inside an epoch replays the skipped batches' draws (bit-exact on the CPU).
The draws differ from the per-example path's (another random stream) but follow the same distribution (tested).

`random_crop_flip` is the batched form of the classic CIFAR augmentation: pad by `pad` (zeros, or a reflection
of the image), crop back at a uniform offset in [0, 2 pad] per axis, flip horizontally with probability 1/2.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

PADDINGS = ("constant", "reflect")  # constant = zeros (torchvision RandomCrop's default); reflect = mirror


@runtime_checkable
class BatchesOnDevice(Protocol):
    """A dataset that can hand the engine whole batches made on the device (see the module docstring)."""

    def on_device(self, device: torch.device) -> "BatchesOnDevice": ...

    def batch(self, indices: torch.Tensor, generator: torch.Generator) -> Any: ...


def pad_images(x: torch.Tensor, pad: int, mode: str) -> torch.Tensor:
    """[..., C, H, W] float images padded by `pad` on each side with zeros (`constant`) or a reflection."""
    if mode not in PADDINGS:
        raise ValueError(f"crop padding {mode!r} is not allowed; choose one of: {', '.join(PADDINGS)}")
    if mode == "constant":
        return F.pad(x, (pad,) * 4)
    return F.pad(x, (pad,) * 4, mode="reflect")  # reflect pads 3-D and 4-D inputs


def random_crop_flip(x: torch.Tensor, pad: int, mode: str, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Float images [B, C, H, W]: each padded, cropped back to H x W at its own uniform offset, and (when `flip`)
    mirrored left-right with probability 1/2. Offsets and flips are drawn from `generator` (on x's device)."""
    b, _, h, w = x.shape
    padded = pad_images(x, pad, mode)
    top, left = torch.randint(0, 2 * pad + 1, (2, b), generator=generator, device=x.device)
    rows = (top[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # [B, 1, H, 1]
    cols = (left[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # [B, 1, 1, W]
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    channel = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    out = padded[batch, channel, rows, cols]
    if flip:
        mirrored = torch.rand(b, generator=generator, device=x.device) < 0.5
        out = torch.where(mirrored[:, None, None, None], out.flip(-1), out)
    return out


class DeviceBatches:
    """Iterates one epoch's batches of `dataset` (a BatchesOnDevice already on `device`) for the index batches
    `batch_sampler` yields; `generator` (on `device`) drives the augmentation."""

    def __init__(self, dataset: BatchesOnDevice, batch_sampler: Iterable[list[int]], device: torch.device,
                 generator: torch.Generator):
        self.dataset, self.batch_sampler, self.device, self.generator = dataset, batch_sampler, device, generator

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[Any]:
        for indices in self.batch_sampler:
            yield self.dataset.batch(torch.as_tensor(indices, device=self.device), self.generator)
