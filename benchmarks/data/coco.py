"""One COCO instances reader for the procedural scenes and for real COCO 2017.

`CocoInstances(image_dir, annotation_file)` yields `(image, target)` in torchvision's detection format:
image float [3, H, W] in 0..1; target {"boxes": float [N, 4] xyxy, "labels": int64 [N] in 1..K, "masks": uint8
[N, H, W] (when with_masks), "image_id": int}. COCO category ids (1..90 with gaps in COCO 2017) are mapped to
contiguous labels 1..K; `label_to_category_id` maps back for evaluation. Crowd regions and boxes under one pixel are
left out of training targets (as in torchvision's reference scripts); evaluation always uses the json itself.

Where the data comes from:

    procedural_split(cache_dir, split, n_images, image_size, seed)   # generated once, then reused
    coco2017_split(data_root, split)    # <data_root>/{train2017,val2017}/ + <data_root>/annotations/instances_*.json
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from benchmarks.data.paths import missing

COCO2017_LAYOUT = (
    "  <data_root>/train2017/*.jpg\n"
    "  <data_root>/val2017/*.jpg\n"
    "  <data_root>/annotations/instances_train2017.json\n"
    "  <data_root>/annotations/instances_val2017.json"
)
COCO2017_HOW = (
    "download train2017.zip, val2017.zip and annotations_trainval2017.zip from cocodataset.org and unzip them "
    "into <data_root> (nothing is downloaded at run time)"
)


class CocoInstances(Dataset):
    """COCO instances json + image folder -> (image tensor, torchvision detection target)."""

    def __init__(
        self,
        image_dir: str | Path,
        annotation_file: str | Path,
        with_masks: bool = True,
        max_images: Optional[int] = None,
        skip_empty: bool = False,
        hflip_prob: float = 0.0,
    ):
        """
        with_masks: decode instance masks into the targets (Mask R-CNN); off for box-only detectors (faster).
        max_images: keep only the first `max_images` images (sorted by id); None = all.
        skip_empty: drop images without a usable annotation (training; the detectors learn nothing from them).
        hflip_prob: probability of a horizontal flip of image, boxes and masks (training augmentation); drawn
                    from torch's RNG, which the engine seeds (per worker too), so runs repeat exactly.
        """
        from pycocotools.coco import COCO

        self.image_dir = Path(image_dir)
        self.annotation_file = Path(annotation_file)
        if not self.annotation_file.is_file():
            raise FileNotFoundError(f"COCO annotation file not found: {self.annotation_file}")
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"COCO image folder not found: {self.image_dir}")
        if not 0.0 <= hflip_prob <= 1.0:
            raise ValueError(f"hflip_prob must be in [0, 1], got {hflip_prob}")
        with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints loading times
            self.coco = COCO(str(self.annotation_file))
        self.category_ids: list[int] = sorted(self.coco.getCatIds())
        self.label_to_category_id: list[int] = [0] + self.category_ids  # label 0 is background
        self._label_of = {cat: i + 1 for i, cat in enumerate(self.category_ids)}
        self.class_names: list[str] = [self.coco.cats[c]["name"] for c in self.category_ids]
        ids = sorted(self.coco.getImgIds())
        if skip_empty:
            ids = [i for i in ids if any(self._usable(a) for a in self.coco.imgToAnns[i])]
        if max_images is not None:
            ids = ids[:max_images]
        if not ids:
            raise ValueError(f"{self.annotation_file} has no usable images")
        self.image_ids: list[int] = ids
        self.with_masks = with_masks
        self.hflip_prob = hflip_prob

    @property
    def num_classes(self) -> int:
        """Number of object classes (without background)."""
        return len(self.category_ids)

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        from PIL import Image

        from benchmarks.data.procedural_coco import decode_segmentation

        image_id = self.image_ids[index]
        info = self.coco.imgs[image_id]
        with Image.open(self.image_dir / info["file_name"]) as im:
            rgb = np.asarray(im.convert("RGB"))
        height, width = rgb.shape[:2]
        anns = [a for a in self.coco.imgToAnns[image_id] if self._usable(a)]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
        target = {
            "boxes": boxes,
            "labels": torch.tensor([self._label_of[a["category_id"]] for a in anns], dtype=torch.int64),
            "image_id": image_id,
        }
        image = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float().div_(255)
        if self.with_masks:
            masks = [decode_segmentation(a["segmentation"], height, width) for a in anns]
            stacked = np.stack(masks) if masks else np.zeros((0, height, width), dtype=bool)
            target["masks"] = torch.from_numpy(stacked.astype(np.uint8))
        if self.hflip_prob > 0 and torch.rand(()).item() < self.hflip_prob:
            image = image.flip(-1)
            target["boxes"] = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1)
            if self.with_masks:
                target["masks"] = target["masks"].flip(-1)
        return image, target

    @staticmethod
    def _usable(ann: dict) -> bool:
        return not ann.get("iscrowd", 0) and ann["bbox"][2] >= 1 and ann["bbox"][3] >= 1


def detection_collate(batch: list) -> tuple[list[torch.Tensor], list[dict]]:
    """Keep images and targets as lists: torchvision detectors take variable-size images."""
    images, targets = zip(*batch)
    return list(images), list(targets)


def procedural_split(
    cache_dir: str | Path, split: str, n_images: int, image_size: int, seed: int, max_objects: int = 4, **kwargs
) -> CocoInstances:
    """The procedural scenes of `split` ("train" | "val"), generated into the cache on first use."""
    from benchmarks.data.procedural_coco import cached_scenes

    scenes = cached_scenes(cache_dir, split, n_images, image_size, seed, max_objects=max_objects)
    return CocoInstances(scenes.image_dir, scenes.annotation_file, **kwargs)


def coco2017_paths(data_root: Optional[str | Path], split: str) -> tuple[Path, Path]:
    """(image folder, annotation file) of COCO 2017 `split` ("train" | "val"); a clear error when missing."""
    if split not in ("train", "val"):
        raise ValueError(f"COCO 2017 split must be 'train' or 'val', got {split!r}")
    if data_root is None:
        raise missing("coco2017", [], COCO2017_LAYOUT, COCO2017_HOW)
    root = Path(data_root).expanduser()
    image_dir = root / f"{split}2017"
    annotation_file = root / "annotations" / f"instances_{split}2017.json"
    if not image_dir.is_dir() or not annotation_file.is_file():
        raise missing("coco2017", [image_dir, annotation_file], COCO2017_LAYOUT, COCO2017_HOW)
    return image_dir, annotation_file


def coco2017_split(data_root: Optional[str | Path], split: str, **kwargs) -> CocoInstances:
    """Real COCO 2017 `split` through the same reader."""
    image_dir, annotation_file = coco2017_paths(data_root, split)
    return CocoInstances(image_dir, annotation_file, **kwargs)
