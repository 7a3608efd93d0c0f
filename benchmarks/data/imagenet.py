"""ImageNet-1k (or any ImageNet-style folder) from torchvision's layouts, never downloaded.

Accepted under `data_root`:

* extracted folders `train/<wnid>/*.JPEG` and `val/<wnid>/*.JPEG` (ImageFolder layout; what
  `torchvision.datasets.ImageNet` leaves after its first run);
* the original archives `ILSVRC2012_img_train.tar`, `ILSVRC2012_img_val.tar` and `ILSVRC2012_devkit_t12.tar.gz`,
  which `torchvision.datasets.ImageNet` unpacks into the folders above on first use (once; it takes hours).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from benchmarks.data.paths import missing

_ARCHIVES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar", "ILSVRC2012_devkit_t12.tar.gz")


def load_imagenet(split: str, data_root: Optional[str], transform: Optional[Callable] = None) -> Any:
    """A torchvision dataset of (transformed PIL image, class index) for split "train" or "val"."""
    from torchvision import datasets

    if split not in ("train", "val"):
        raise ValueError(f"split={split!r} is not allowed; choose one of: train, val")
    root = Path(data_root).expanduser() if data_root else None
    if root is not None and (root / split).is_dir():
        return datasets.ImageFolder(str(root / split), transform=transform)
    if root is not None and all((root / a).is_file() for a in _ARCHIVES):
        return datasets.ImageNet(str(root), split=split, transform=transform)
    raise missing(
        "imagenet",
        [root / split] if root else [],
        "  <data_root>/train/<wnid>/*.JPEG and <data_root>/val/<wnid>/*.JPEG   (ImageFolder layout), or\n"
        f"  <data_root>/{{{', '.join(_ARCHIVES)}}}   (unpacked by torchvision on first use)",
        "register at image-net.org, download the ILSVRC2012 train/val archives and the devkit into <data_root>",
    )
