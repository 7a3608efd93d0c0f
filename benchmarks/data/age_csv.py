"""Age regression from a CSV + image folder: AgeDB and IMDB-WIKI in the layout of Yang et al. 2021 ("DIR").

    <data_root>/agedb.csv            columns (any order, header required): path, age, split
    <data_root>/<path>               the image each row names, relative to data_root (e.g. agedb/12345.jpg)

`split` is one of train / val / test; `age` is a number (years). IMDB-WIKI uses `imdb_wiki.csv` the same way. Any
other dataset in this layout works with `csv_name`. Nothing is downloaded: the faces and their CSVs are
distributed by the dataset owners (see the DIR repository's data-preparation scripts).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from torch.utils.data import Dataset

from benchmarks.data.paths import missing

CSV_NAMES = {"agedb": "agedb.csv", "imdb_wiki": "imdb_wiki.csv"}
SPLITS = ("train", "val", "test")
_COLUMNS = ("path", "age", "split")


def read_age_csv(csv_path: Path, split: str) -> tuple[list[str], np.ndarray]:
    """(image paths relative to the CSV's folder, ages float32) of the rows whose split is `split`."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not allowed; choose one of: {', '.join(SPLITS)}")
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        absent = [c for c in _COLUMNS if c not in (reader.fieldnames or [])]
        if absent:
            raise ValueError(f"{csv_path}: missing column(s) {', '.join(absent)}; the header must name "
                             f"{', '.join(_COLUMNS)} (found: {', '.join(reader.fieldnames or [])})")
        rows = [r for r in reader if r["split"].strip() == split]
    if not rows:
        raise ValueError(f"{csv_path}: no rows with split == {split!r}")
    return [r["path"].strip() for r in rows], np.array([float(r["age"]) for r in rows], dtype=np.float32)


def find_csv(dataset: str, data_root: Optional[str], csv_name: Optional[str] = None) -> Path:
    """The dataset's CSV under `data_root`, or the missing-dataset error saying what to put where."""
    name = csv_name or CSV_NAMES.get(dataset)
    if name is None:
        known = ", ".join(CSV_NAMES)
        raise ValueError(f"dataset={dataset!r} has no known CSV file; set task.csv_name (known datasets: {known})")
    root = Path(data_root).expanduser() if data_root else None
    if root is not None and (root / name).is_file():
        return root / name
    raise missing(
        dataset,
        [root] if root else [],
        f"  <data_root>/{name}   (header: path,age,split; split in train/val/test)\n"
        f"  <data_root>/<path of each row>   (the face images, e.g. <data_root>/{dataset}/...jpg)",
        "get the images from the dataset owners and build the CSV with the data-preparation scripts of "
        "github.com/YyzHarry/imbalanced-regression (agedb.csv / imdb_wiki.csv)",
    )


class AgeImages(Dataset):
    """(transformed RGB image, age float32) for the rows of one split."""

    def __init__(self, csv_path: Path, split: str, transform: Callable):
        self.root = csv_path.parent
        self.paths, self.ages = read_age_csv(csv_path, split)
        self.transform = transform
        first = self.root / self.paths[0]
        if not first.is_file():
            raise FileNotFoundError(f"{csv_path} names {self.paths[0]!r} but {first} does not exist; image paths "
                                    f"in the CSV are relative to {self.root}")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from PIL import Image

        with Image.open(self.root / self.paths[i]) as image:
            return self.transform(image.convert("RGB")), self.ages[i]
