"""CelebA reader on a tiny copy in torchvision's real layout and file formats, written by the test.

The images are 178x218 like the aligned faces: a red frame outside the central 140x140 crop, and inside it a
left half of a known colour and a dark right half, so crop, resize, scaling and flips can be checked by value.
"""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from benchmarks.data import celeba
from benchmarks.data.paths import MissingDataset
from fixture_writers import ATTRIBUTE_NAMES, DARK, LEFT_COLOUR, attribute_row, write_celeba


def unit(colour):
    """uint8 RGB -> the reader's [-1, 1] values."""
    return torch.tensor([c / 255 * 2 - 1 for c in colour])


def test_splits_follow_the_partition_file_and_attributes_map_to_zero_one(tmp_path):
    write_celeba(tmp_path)
    splits = ("train", "valid", "test")
    sizes = {s: len(celeba.celeba_split(str(tmp_path), s, 16, hflip=False)) for s in splits}
    assert sizes == {"train": 10, "valid": 2, "test": 4}
    test = celeba.celeba_split(str(tmp_path), "test", 16, hflip=False)
    assert test.files == ["000013.jpg", "000014.jpg", "000015.jpg", "000016.jpg"]
    assert test.attribute_names == ATTRIBUTE_NAMES
    _, attributes = test[1]  # 000014.jpg: image 14
    assert attributes.dtype == torch.int64 and attributes.shape == (40,)
    assert attributes.tolist() == [(v + 1) // 2 for v in attribute_row(14)]
    assert set(test.attributes.unique().tolist()) == {0, 1}
    with pytest.raises(ValueError, match="train, valid, test"):
        celeba.celeba_split(str(tmp_path), "val", 16, hflip=False)


def test_reader_agrees_with_torchvisions_parser_on_split_files_and_attributes(tmp_path, monkeypatch):
    from torchvision.datasets import CelebA

    write_celeba(tmp_path)
    # torchvision checks the md5 of the released text files, which no fixture can match; we compare the parse
    monkeypatch.setattr(CelebA, "_check_integrity", lambda self: True)
    for split in ("train", "valid", "test"):
        theirs = CelebA(str(tmp_path), split=split, target_type="attr")
        ours = celeba.celeba_split(str(tmp_path), split, 16, hflip=False)
        assert ours.files == list(theirs.filename)
        assert torch.equal(ours.attributes, theirs.attr.long())
        assert ours.attribute_names == [n for n in theirs.attr_names if n]


def test_centre_crop_resize_and_scaling_give_the_known_pixel_values(tmp_path):
    write_celeba(tmp_path)
    image, _ = celeba.celeba_split(str(tmp_path), "train", 16, hflip=False)[0]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32
    assert image.min() >= -1 and image.max() <= 1
    # (200, 100, 50) -> (0.5686, -0.2157, -0.6078); JPEG keeps a solid colour within a few levels
    assert torch.allclose(image[:, 8, 3], unit(LEFT_COLOUR), atol=0.03)
    assert torch.allclose(image[:, 8, 12], unit(DARK), atol=0.03)
    # the corners come from inside the 140-px crop: no trace of the red frame around it (red is +1, -1, -1)
    for row, col, colour in ((0, 0, LEFT_COLOUR), (15, 0, LEFT_COLOUR), (0, 15, DARK), (15, 15, DARK)):
        assert torch.allclose(image[:, row, col], unit(colour), atol=0.05), (row, col)


def test_generation_flips_training_images_only_and_trains_the_proxy_on_attributes(tmp_path):
    from benchmarks.tasks import generation

    write_celeba(tmp_path)
    cfg = generation.Config(dataset="celeba", data_root=str(tmp_path), image_size=16, model="unet-tiny")
    train_set, test_images, proxy_data, name = generation.load_data(cfg)
    assert name == "celeba-16" and len(train_set) == 10 and test_images.shape == (4, 3, 16, 16)
    left = unit(LEFT_COLOUR)[0]  # the red channel tells the halves apart: 0.57 left, -0.84 right

    def flipped(image):
        return bool(image[0, 8, 3] < left - 0.2)

    torch.manual_seed(0)
    draws = [flipped(train_set[0]) for _ in range(40)]
    assert 5 < sum(draws) < 35  # flipped about half of the time
    assert not any(flipped(image) for image in test_images)
    images, targets, multilabel = proxy_data(100)
    assert images.shape == (10, 3, 16, 16) and not any(flipped(image) for image in images)
    assert multilabel is True and targets.shape == (10, 40)
    assert targets[0].tolist() == [(v + 1) // 2 for v in attribute_row(1)]


def test_missing_files_raise_missing_dataset_naming_the_layout(tmp_path):
    layout = "(?s)img_align_celeba.*list_eval_partition.txt.*list_attr_celeba"
    with pytest.raises(MissingDataset, match=layout):
        celeba.celeba_split(str(tmp_path), "train", 16, hflip=False)
    with pytest.raises(MissingDataset, match="task.data_root"):
        celeba.celeba_split(None, "train", 16, hflip=False)
    folder = write_celeba(tmp_path)
    (folder / "list_attr_celeba.txt").unlink()
    with pytest.raises(MissingDataset, match=r"missing: list_attr_celeba\.txt"):
        celeba.celeba_split(str(tmp_path), "train", 16, hflip=False)


def test_malformed_attribute_rows_name_the_file_and_line(tmp_path):
    folder = write_celeba(tmp_path)
    lines = (folder / "list_attr_celeba.txt").read_text().splitlines()
    lines[4] = lines[4].replace(" 1", " 0", 1)  # third image row: a 0 where -1 or 1 belongs
    (folder / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"list_attr_celeba.txt:5: .*40 values of -1 or 1"):
        celeba.celeba_split(str(tmp_path), "train", 16, hflip=False)


@pytest.mark.slow
def test_generation_smoke_run_on_celeba_end_to_end(tmp_path, monkeypatch):
    from benchmarks import engine
    from benchmarks.recipes import compose_run

    write_celeba(tmp_path / "data")
    monkeypatch.setenv("SEMA_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SEMA_INCEPTION_WEIGHTS", raising=False)
    overrides = [
        "logger.wandb.mode=disabled",
        "trainer.num_threads=1",
        "task.dataset=celeba",
        f"task.data_root={tmp_path / 'data'}",
        "task.image_size=16",
        "task.batch_size=4",
    ]
    cfg, run_dir = compose_run("smoke/generation", "sema", 0, str(tmp_path / "runs"), overrides)
    engine.run(cfg, run_dir)
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "completed" and result["dataset"] == "celeba-16"
    assert set(result["final"]) == {"denoise_loss", "proxy_fid"} and result["final"]["proxy_fid"] >= 0
    with Image.open(run_dir / "samples.png") as grid:  # 4x4 grid of 16-px RGB images with 2-px padding
        assert grid.size == (4 * 18 + 2, 4 * 18 + 2) and grid.mode == "RGB"
    assert list((tmp_path / "cache" / "fid_proxy").glob("celeba-16_c3_n*_v*.pt"))
