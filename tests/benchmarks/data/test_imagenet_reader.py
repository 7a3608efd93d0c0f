"""ImageNet reader on a tiny ImageFolder tree of real JPEG files."""

from __future__ import annotations

import pytest

from benchmarks.data.imagenet import load_imagenet
from benchmarks.data.paths import MissingDataset
from fixture_writers import write_imagenet


def test_imagefolder_layout(tmp_path):
    write_imagenet(tmp_path)
    train = load_imagenet("train", str(tmp_path))
    assert len(train) == 4 and train.classes == ["n01440764", "n01443537"]
    image, label = train[3]
    assert label == 1 and image.size == (48, 40)


def test_missing_imagenet_names_both_layouts(tmp_path):
    with pytest.raises(MissingDataset) as err:
        load_imagenet("val", str(tmp_path))
    message = str(err.value)
    assert "<data_root>/val/<wnid>/*.JPEG" in message and "ILSVRC2012_devkit_t12.tar.gz" in message
