"""CelebA (aligned and cropped faces, 40 binary attributes) in torchvision's layout, never downloaded.

    <data_root>/celeba/img_align_celeba/000001.jpg ...           (202,599 JPEGs, 178x218)
    <data_root>/celeba/list_eval_partition.txt                   "000001.jpg 0" (0 train, 1 valid, 2 test)
    <data_root>/celeba/list_attr_celeba.txt                      count, 40 names, "000001.jpg -1  1 ..."
    (identity_CelebA.txt, list_bbox_celeba.txt, list_landmarks_align_celeba.txt: part of the layout, not read)

Read by the project's own small parser rather than `torchvision.datasets.CelebA`, which refuses any copy whose
text files fail its md5 check (a re-saved or CRLF copy, a subset, a test fixture) and needs the three files
above that no task uses. The parse is the same: the partition file chooses the split, attributes -1/1 become
0/1.

Images are centre-cropped to 140x140 and resized to `image_size` (the crop DDPM/DDIM use for CelebA 64x64),
flipped horizontally at random when asked (training only), and scaled to [-1, 1]; items are
(image float32 [3, S, S], attributes int64 [40] in {0, 1}).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch.utils.data import Dataset

from benchmarks.data.paths import missing

SPLITS = {"train": 0, "valid": 1, "test": 2}  # split name -> its code in list_eval_partition.txt
IMAGE_DIR = "img_align_celeba"
PARTITION_FILE = "list_eval_partition.txt"
ATTRIBUTE_FILE = "list_attr_celeba.txt"
CROP = 140  # centre crop of the 178x218 aligned faces before resizing
_LAYOUT = (
    f"  <data_root>/celeba/{IMAGE_DIR}/000001.jpg ...\n"
    f"  <data_root>/celeba/{PARTITION_FILE}\n"
    f"  <data_root>/celeba/{ATTRIBUTE_FILE}"
)
_HOW = (
    "download img_align_celeba.zip, list_eval_partition.txt and list_attr_celeba.txt from the CelebA site "
    "(mmlab.ie.cuhk.edu.hk/projects/CelebA.html) on a machine with a network and unzip them into "
    "<data_root>/celeba/"
)


def read_partition(path: Path) -> dict[str, int]:
    """file name -> split code, from lines "000001.jpg 0"."""
    partition = {}
    for line_number, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise ValueError(f"{path}:{line_number}: expected '<file> <0|1|2>', got {line!r}")
        partition[fields[0]] = int(fields[1])
    return partition


def read_attributes(path: Path) -> tuple[list[str], dict[str, list[int]]]:
    """(40 attribute names, file name -> attributes in {0, 1}) from list_attr_celeba.txt.

    Format: line 1 the image count, line 2 the attribute names, then "<file> <40 values of -1 or 1>".
    """
    lines = path.read_text().splitlines()
    if len(lines) < 2:
        raise ValueError(f"{path}: expected a count line and an attribute-name line, got {len(lines)} lines")
    names = lines[1].split()
    attributes = {}
    for line_number, line in enumerate(lines[2:], 3):
        fields = line.split()
        if not fields:
            continue
        values = fields[1:]
        if len(values) != len(names) or any(v not in ("-1", "1") for v in values):
            raise ValueError(
                f"{path}:{line_number}: expected a file name and {len(names)} values of -1 or 1, got {line!r}"
            )
        attributes[fields[0]] = [(int(v) + 1) // 2 for v in values]
    return names, attributes


class CelebAFaces(Dataset):
    """One split of CelebA; items are (image [3, S, S] in [-1, 1], attributes int64 [40] in {0, 1})."""

    def __init__(self, folder: Path, split: str, image_size: int, hflip: bool):
        from torchvision import transforms

        partition = read_partition(folder / PARTITION_FILE)
        self.attribute_names, attributes = read_attributes(folder / ATTRIBUTE_FILE)
        self.image_dir = folder / IMAGE_DIR
        self.files = [name for name, code in partition.items() if code == SPLITS[split]]  # the file's order
        unlabelled = [name for name in self.files if name not in attributes]
        if unlabelled:
            raise ValueError(
                f"celeba {split}: {len(unlabelled)} images of {PARTITION_FILE} have no row in "
                f"{ATTRIBUTE_FILE}, e.g. {unlabelled[0]}"
            )
        self.attributes = torch.tensor([attributes[name] for name in self.files], dtype=torch.int64)
        steps = [transforms.CenterCrop(CROP), transforms.Resize(image_size)]
        if hflip:
            steps.append(transforms.RandomHorizontalFlip())  # torch's global generator (the engine seeds it)
        steps += [transforms.ToTensor(), transforms.Normalize([0.5] * 3, [0.5] * 3)]
        self.transform = transforms.Compose(steps)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        from PIL import Image

        with Image.open(self.image_dir / self.files[i]) as image:
            return self.transform(image.convert("RGB")), self.attributes[i]


def celeba_split(data_root: Optional[str], split: str, image_size: int, hflip: bool) -> CelebAFaces:
    """One split of `<data_root>/celeba`; raises MissingDataset naming the expected layout."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not allowed; choose one of: {', '.join(SPLITS)}")
    if not data_root:
        raise missing("celeba", [], _LAYOUT, _HOW)
    folder = Path(data_root).expanduser() / "celeba"
    needed = [folder / IMAGE_DIR, folder / PARTITION_FILE, folder / ATTRIBUTE_FILE]
    absent = [path for path in needed if not path.exists()]
    if absent:
        raise missing(
            "celeba", [folder], _LAYOUT, f"{_HOW} (missing: {', '.join(p.name for p in absent)})"
        )
    return CelebAFaces(folder, split, image_size, hflip)
