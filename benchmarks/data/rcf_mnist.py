"""RCF-MNIST (rotated coloured Fashion-MNIST), the openmixup recipe the SEMA paper's regression table uses.

Image i of a split: the Fashion-MNIST image i, zero-padded from 28x28 to 32x32, rotated about its centre by
k_i * 6 degrees (k_i in 0..59; nearest-neighbour, torchvision's default), then pasted as a white silhouette onto
background i % N: every pixel whose rotated value is > 2 (of 255) becomes 255 on all three channels. The target is
the angle k_i * 6 in degrees (0..354).

Backgrounds:

* `data_root` with CIFAR-10 (`<data_root>/cifar-10-batches-py/`): the original's, CIFAR-10 train images for the train
  split and test images for the test split (N = 50,000 / 10,000);
* offline (default): 32x32 crops of the 18 real photos bundled with scikit-image and scikit-learn (astronaut, coffee,
  rocket, china, flower, ...), one crop per image: a square of random side (32 px to a quarter of the photo's short
  side, at least 32) at a random place, resized to 32x32 with antialiasing. Same recipe otherwise; results are
  labelled "offline backgrounds" since they are not comparable with CIFAR-background numbers.

Reproducibility: the original draws the angles with Python's unseeded `random.sample`, so its dataset differs from
run to run. Here the angles and crops come from fixed seeds (`ANGLE_SEEDS`, `CROP_SEEDS`), independent of the run's
seed, so every run and method sees the same images. Building 70k images takes a few seconds; the arrays are cached
under `<cache_dir>/rcf_mnist/`.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Optional

import numpy as np

FORMAT = 1  # bump when the recipe changes, so stale caches are not reused
ANGLE_STEP = 6  # degrees between the 60 possible angles
THRESHOLD = 2  # silhouette pixels: rotated value > THRESHOLD
ANGLE_SEEDS = {"train": 20240214, "test": 20240215}
CROP_SEEDS = {"train": 3101, "test": 3102}
SKIMAGE_PHOTOS = (
    "astronaut", "brick", "camera", "chelsea", "coffee", "coins", "grass", "gravel", "hubble_deep_field",
    "immunohistochemistry", "moon", "retina", "rocket", "clock", "cell", "stereo_motorcycle",
)


@functools.lru_cache(maxsize=1)
def bundled_photos() -> tuple[np.ndarray, ...]:
    """The real photos shipped in the scikit-image and scikit-learn wheels, as uint8 [H, W, 3] arrays (read once)."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos = []
    for name in SKIMAGE_PHOTOS:
        image = getattr(skimage.data, name)()
        image = image[0] if isinstance(image, tuple) else image  # stereo_motorcycle: (left, right, disparity)
        image = np.asarray(image, dtype=np.uint8)
        photos.append(np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image[..., :3])
    photos.extend(np.asarray(img, dtype=np.uint8) for img in load_sample_images().images)
    return tuple(photos)


def photo_crops(n: int, seed: int, photos: Optional[tuple[np.ndarray, ...]] = None, size: int = 32) -> np.ndarray:
    """`n` square crops uint8 [n, size, size, 3] of random side and place in random photos, resized to `size`."""
    from PIL import Image

    photos = photos if photos is not None else bundled_photos()
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        photo = photos[rng.integers(len(photos))]
        h, w = photo.shape[:2]
        side = int(rng.integers(size, max(size, min(h, w) // 4) + 1))
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = Image.fromarray(photo[top : top + side, left : left + side])
        out[i] = np.asarray(crop.resize((size, size), Image.BILINEAR, reducing_gap=None))
    return out


def draw_angles(n: int, seed: int) -> np.ndarray:
    """Angles k * 6 degrees, k uniform in 0..59, as float32 [n]."""
    return (np.random.default_rng(seed).integers(0, 360 // ANGLE_STEP, size=n) * ANGLE_STEP).astype(np.float32)


def compose(silhouettes: np.ndarray, angles: np.ndarray, backgrounds: np.ndarray) -> np.ndarray:
    """The recipe: pad 28->32, rotate image i by angles[i], paint pixels > 2 white on background i % N."""
    import torch
    from torchvision.transforms.functional import rotate

    padded = np.pad(silhouettes, ((0, 0), (2, 2), (2, 2)))
    rotated = np.empty_like(padded)
    for angle in np.unique(angles):  # one batched rotation per distinct angle
        index = np.flatnonzero(angles == angle)
        batch = torch.from_numpy(padded[index]).unsqueeze(1)
        rotated[index] = rotate(batch, float(angle)).squeeze(1).numpy()
    images = backgrounds[np.arange(len(silhouettes)) % len(backgrounds)].copy()
    images[rotated > THRESHOLD] = 255
    return images


def _load_fashion(split: str, data_root: Optional[str]) -> np.ndarray:
    from benchmarks.data.fashion_mnist import load_fashion_mnist
    from benchmarks.data.paths import MissingDataset

    if data_root is not None:
        try:  # Fashion-MNIST next to CIFAR-10 under the root, else the system copy
            return load_fashion_mnist(split, data_root)[0]
        except MissingDataset:
            pass
    return load_fashion_mnist(split, None)[0]


def build_rcf_mnist(
    split: str, n: Optional[int] = None, data_root: Optional[str] = None, cache_dir: Optional[Path] = None
) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [n, 32, 32, 3] and angle targets float32 [n] (the first n of the split; None = all).

    With `data_root`, backgrounds are CIFAR-10 from it (missing CIFAR-10 raises the dataset's how-to error).
    """
    if split not in ANGLE_SEEDS:
        raise ValueError(f"split={split!r} is not allowed; choose one of: {', '.join(ANGLE_SEEDS)}")
    cache = None
    if cache_dir is not None:
        source = "cifar10" if data_root is not None else "photos"
        cache = Path(cache_dir) / "rcf_mnist" / f"v{FORMAT}_{split}_{source}_{n if n is not None else 'all'}.npz"
        if data_root is None and cache.is_file():  # real-root builds are not cached: the root's content may change
            with np.load(cache) as saved:
                return saved["images"], saved["targets"]
    silhouettes = _load_fashion(split, data_root)
    silhouettes = silhouettes[:n] if n is not None else silhouettes
    angles = draw_angles(len(silhouettes), ANGLE_SEEDS[split])
    if data_root is not None:
        from benchmarks.data.cifar import load_cifar

        backgrounds = load_cifar("cifar10", split, data_root)[0]
    else:
        backgrounds = photo_crops(len(silhouettes), CROP_SEEDS[split])
    images = compose(silhouettes, angles, backgrounds)
    if cache is not None and data_root is None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(partial, images=images, targets=angles)
        os.replace(partial, cache)
    return images, angles
