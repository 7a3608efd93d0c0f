"""AgeDB / IMDB-WIKI CSV + image-folder reader on tiny fixture files written here."""

from __future__ import annotations

import numpy as np
import pytest
from benchmarks.data.age_csv import AgeImages, find_csv, read_age_csv
from benchmarks.data.paths import MissingDataset
from fixture_writers import write_age_csv


ROWS = [("agedb/a.png", 23, "train"), ("agedb/b.png", 31.5, "train"), ("agedb/c.png", 47, "test"),
        ("agedb/d.png", 8, "val")]


def test_rows_are_split_and_ages_parsed(tmp_path):
    csv_path = write_age_csv(tmp_path, ROWS)
    paths, ages = read_age_csv(csv_path, "train")
    assert paths == ["agedb/a.png", "agedb/b.png"] and ages.tolist() == [23.0, 31.5]
    assert read_age_csv(csv_path, "val")[1].tolist() == [8.0]


def test_images_load_as_transformed_rgb_with_float_age(tmp_path):
    csv_path = write_age_csv(tmp_path, ROWS)
    ds = AgeImages(csv_path, "test", transform=lambda im: np.asarray(im))
    image, age = ds[0]
    assert len(ds) == 1 and image.shape == (16, 16, 3) and (image == 40).all() and age == pytest.approx(47.0)


def test_missing_csv_names_the_file_and_where(tmp_path):
    with pytest.raises(MissingDataset, match="agedb.csv"):
        find_csv("agedb", str(tmp_path))
    with pytest.raises(MissingDataset, match="imdb_wiki.csv"):
        find_csv("imdb_wiki", None)


def test_bad_csv_and_missing_images_are_explained(tmp_path):
    (tmp_path / "agedb.csv").write_text("file,age\nx.png,3\n")
    with pytest.raises(ValueError, match="missing column"):
        read_age_csv(tmp_path / "agedb.csv", "train")
    (tmp_path / "agedb.csv").write_text("path,age,split\nnot_there.png,3,train\n")
    with pytest.raises(FileNotFoundError, match="relative to"):
        AgeImages(tmp_path / "agedb.csv", "train", transform=lambda im: im)
    with pytest.raises(ValueError, match="train, val, test"):
        read_age_csv(tmp_path / "agedb.csv", "holdout")
