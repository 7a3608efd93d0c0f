"""ADE20K (MIT Scene Parsing, SceneParsing150) in the `ADEChallengeData2016` layout, 150 classes, 0 = ignore.

    <data_root>/ADEChallengeData2016/images/training/ADE_train_00000001.jpg ...      (20,210 images)
    <data_root>/ADEChallengeData2016/images/validation/ADE_val_00000001.jpg ...      (2,000 images)
    <data_root>/ADEChallengeData2016/annotations/{training,validation}/<same stem>.png   (uint8 class maps)

`data_root` may also be the `ADEChallengeData2016` folder itself. Annotation value 0 means "other /
unlabelled" and is ignored; 1..150 become classes 0..149 (mmsegmentation's reduce_zero_label).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from benchmarks.data.paths import missing

NUM_CLASSES = 150
SPLITS = {"train": "training", "val": "validation"}
_LAYOUT = (
    "  <data_root>/ADEChallengeData2016/images/{training,validation}/*.jpg\n"
    "  <data_root>/ADEChallengeData2016/annotations/{training,validation}/*.png  (same file stems)"
)
_HOW = (
    "download ADEChallengeData2016.zip (the MIT Scene Parsing benchmark, sceneparsing.csail.mit.edu) on a "
    "machine with internet and unzip it into task.data_root"
)


def ade20k_pairs(data_root: Optional[str], split: str) -> list[tuple[Path, Path]]:
    """Sorted (image, annotation) paths of one split; raises MissingDataset naming the expected layout."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not allowed; choose one of: {', '.join(SPLITS)}")
    if not data_root:
        raise missing("ade20k", [], _LAYOUT, _HOW)
    root = Path(data_root).expanduser()
    candidates = [root / "ADEChallengeData2016", root]
    for base in candidates:
        image_dir, annotation_dir = base / "images" / SPLITS[split], base / "annotations" / SPLITS[split]
        if image_dir.is_dir() and annotation_dir.is_dir():
            break
    else:
        raise missing("ade20k", candidates, _LAYOUT, _HOW)
    images = sorted(image_dir.glob("*.jpg"))
    if not images:
        raise missing("ade20k", [image_dir], _LAYOUT, _HOW)
    pairs = [(image, annotation_dir / f"{image.stem}.png") for image in images]
    absent = [str(a) for _, a in pairs if not a.is_file()]
    if absent:
        raise FileNotFoundError(
            f"ade20k {split}: {len(absent)} images have no annotation PNG, e.g. {absent[0]}"
        )
    return pairs
