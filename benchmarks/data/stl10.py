"""STL-10 (Coates et al. 2011; 96x96 colour, 5k labelled train, 8k test, 100k unlabelled) from torchvision's layout.

    <data_root>/stl10_binary/{train_X.bin, train_y.bin, test_X.bin, test_y.bin, unlabeled_X.bin}

The binaries are read directly (no md5 check, so a partial copy works): X is uint8, 3x96x96 per image in
column-major order; y is uint8 labels 1..10 (returned here as 0..9).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from benchmarks.data.paths import missing

SIZE = 96
SPLITS = ("train", "test", "unlabeled")


def _read_images(path: Path) -> np.ndarray:
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % (3 * SIZE * SIZE):
        raise ValueError(f"{path}: size {raw.size} is not a multiple of one 3x96x96 image")
    # Column-major per image: [N, C, W, H] in memory -> [N, H, W, C].
    return np.ascontiguousarray(raw.reshape(-1, 3, SIZE, SIZE).transpose(0, 3, 2, 1))


def load_stl10(split: str, data_root: Optional[str]) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Images uint8 [N, 96, 96, 3] and labels int64 [N] (None for the unlabelled split)."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not allowed; choose one of: {', '.join(SPLITS)}")
    folder = Path(data_root).expanduser() / "stl10_binary" if data_root else None
    images_file = folder / f"{split}_X.bin" if folder else None
    labels_file = folder / f"{split}_y.bin" if folder and split != "unlabeled" else None
    if images_file is None or not images_file.is_file() or (labels_file is not None and not labels_file.is_file()):
        raise missing(
            "stl10",
            [folder] if folder else [],
            "  <data_root>/stl10_binary/{train_X.bin, train_y.bin, test_X.bin, test_y.bin, unlabeled_X.bin}",
            "download http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz and extract it into <data_root>",
        )
    images = _read_images(images_file)
    if labels_file is None:
        return images, None
    labels = np.fromfile(labels_file, dtype=np.uint8).astype(np.int64) - 1
    if len(labels) != len(images):
        raise ValueError(f"{labels_file}: {len(labels)} labels for {len(images)} images")
    return images, labels
