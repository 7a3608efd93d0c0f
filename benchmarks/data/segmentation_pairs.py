"""Image / class-map pairs on disk as a torch Dataset: the one reader of every semantic segmentation set.

ADE20K (`benchmarks.data.ade20k`) and the procedural scenes (`benchmarks.data.procedural_coco`, its
`semantic/` folder) both reduce to a list of (RGB image file, uint8 class-map PNG) pairs plus a label mapping,
so they share the resize, flip and normalisation below.

Items are (image float32 [3, S, S] normalised with ImageNet statistics, mask int64 [S, S]); the image is
resized bilinearly and the mask by nearest neighbour to S x S. Training items are flipped horizontally at
random (torch's global generator, which the engine seeds).

With `keep_ratio=True` (sliding-window evaluation) items keep their own sizes, so they batch one at a time:
the image is rescaled bilinearly, aspect ratio kept, so that its shorter side is S and its longer side at most
4 S (mmseg's test `Resize(scale=(2048, 512), keep_ratio=True)` for S = 512), and the mask stays at the
annotation's full resolution, where the metric is computed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

IGNORE_INDEX = 255
_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def shift_labels(mask: np.ndarray) -> np.ndarray:
    """ADE20K's convention ("reduce_zero_label"): 0 = unlabelled -> ignore, class k (1..150) -> k - 1."""
    mask = mask.astype(np.int64) - 1
    mask[mask < 0] = IGNORE_INDEX
    return mask


def keep_ratio_size(size: tuple[int, int], short_side: int) -> tuple[int, int]:
    """(width, height) rescaled: shorter side `short_side`, longer side at most 4x that (mmcv's rule)."""
    width, height = size
    factor = min(short_side / min(width, height), 4 * short_side / max(width, height))
    return int(width * factor + 0.5), int(height * factor + 0.5)


class SegmentationPairs(Dataset):
    """(image, mask) pairs resized to `image_size` (or, with `keep_ratio`, the image's shorter side to it and
    the mask not at all); `zero_is_ignore` applies ADE20K's label shift."""

    def __init__(
        self,
        pairs: Sequence[tuple[Path, Path]],
        image_size: int,
        train: bool,
        zero_is_ignore: bool,
        max_items: Optional[int] = None,
        keep_ratio: bool = False,
    ):
        if not pairs:
            raise ValueError("no (image, mask) pairs given")
        self.pairs = list(pairs)[:max_items] if max_items is not None else list(pairs)
        self.image_size, self.train, self.zero_is_ignore = image_size, train, zero_is_ignore
        self.keep_ratio = keep_ratio

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        from PIL import Image

        image_path, mask_path = self.pairs[i]
        with Image.open(image_path) as img:
            image = img.convert("RGB")
            if self.keep_ratio:
                size = keep_ratio_size(image.size, self.image_size)
            else:
                size = (self.image_size, self.image_size)
            image = np.asarray(image.resize(size, Image.BILINEAR) if image.size != size else image)
        with Image.open(mask_path) as m:
            if m.mode not in ("L", "P"):
                raise ValueError(
                    f"{mask_path}: class maps must be 8-bit single-channel PNGs, got mode {m.mode}"
                )
            if self.keep_ratio:
                size = m.size  # the metric is computed at the annotation's own resolution
            mask = np.asarray(m.resize(size, Image.NEAREST) if m.size != size else m)
        mask = shift_labels(mask) if self.zero_is_ignore else mask.astype(np.int64)
        image_t = torch.from_numpy(image.copy()).permute(2, 0, 1).float().div_(255)
        mask_t = torch.from_numpy(np.ascontiguousarray(mask))
        if self.train and torch.rand(()) < 0.5:
            image_t, mask_t = image_t.flip(-1), mask_t.flip(-1)
        return (image_t - _MEAN) / _STD, mask_t
