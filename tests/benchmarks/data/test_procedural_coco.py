"""The procedural COCO generator: deterministic, exact masks, tight boxes of the visible part, semantic maps."""

import json

import numpy as np
import pytest
from PIL import Image

from benchmarks.data.procedural_coco import (
    CATEGORIES,
    decode_segmentation,
    generate_scenes,
    mask_to_xywh,
    semantic_mask,
)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return generate_scenes(tmp_path_factory.mktemp("pc") / "train", n_images=6, image_size=64, seed=3)


def _load(scene_set):
    with open(scene_set.annotation_file) as f:
        return json.load(f)


def test_same_seed_gives_identical_files_and_larger_sets_extend_smaller(scenes, tmp_path):
    again = generate_scenes(tmp_path / "again", n_images=8, image_size=64, seed=3)
    for i in range(1, 7):
        name = f"{i:06d}.png"
        assert (scenes.image_dir / name).read_bytes() == (again.image_dir / name).read_bytes()
        assert (scenes.semantic_dir / name).read_bytes() == (again.semantic_dir / name).read_bytes()
    first, second = _load(scenes), _load(again)
    assert [a for a in second["annotations"] if a["image_id"] <= 6] == first["annotations"]
    other = generate_scenes(tmp_path / "other", n_images=1, image_size=64, seed=4)
    assert (other.image_dir / "000001.png").read_bytes() != (scenes.image_dir / "000001.png").read_bytes()


def test_annotations_are_exact_disjoint_masks_with_tight_boxes(scenes):
    coco = _load(scenes)
    assert coco["categories"] == CATEGORIES
    assert len(coco["images"]) == 6 and all(im["height"] == im["width"] == 64 for im in coco["images"])
    assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])
    for image in coco["images"]:
        anns = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
        assert 1 <= len(anns) <= 4
        union = np.zeros((64, 64), dtype=int)
        for ann in anns:
            mask = decode_segmentation(ann["segmentation"], 64, 64)
            union += mask
            assert ann["area"] == mask.sum() > 0
            x, y, w, h = ann["bbox"]
            rows, cols = np.nonzero(mask)
            assert (x, y, w, h) == (cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1)
            assert ann["iscrowd"] == 0 and 1 <= ann["category_id"] <= 4
        assert union.max() == 1, "visible masks must not overlap"
        # The semantic map on disk is the instance masks painted with their category ids, nothing else.
        on_disk = np.asarray(Image.open(scenes.semantic_dir / image["file_name"]))
        np.testing.assert_array_equal(on_disk, semantic_mask(anns, 64, 64))
        assert ((on_disk > 0) == (union > 0)).all()
        rgb = np.asarray(Image.open(scenes.image_dir / image["file_name"]))
        assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8


def test_existing_set_is_reused_and_a_different_one_refused(scenes):
    stamp = scenes.annotation_file.stat().st_mtime_ns
    assert generate_scenes(scenes.root, n_images=6, image_size=64, seed=3) == scenes
    assert scenes.annotation_file.stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match="other parameters"):
        generate_scenes(scenes.root, n_images=6, image_size=64, seed=4)


def test_hand_made_masks_and_boxes():
    mask = np.zeros((5, 6), dtype=bool)
    mask[1:3, 2:5] = True  # rows 1-2, columns 2-4
    assert mask_to_xywh(mask) == [2.0, 1.0, 3.0, 2.0]
    # Uncompressed RLE is column-major: 1 background pixel, 2 foreground, 1 background on a 2x2 image.
    decoded = decode_segmentation({"size": [2, 2], "counts": [1, 2, 1]}, 2, 2)
    np.testing.assert_array_equal(decoded, [[False, True], [True, False]])
    anns = [{"segmentation": {"size": [2, 2], "counts": [1, 2, 1]}, "category_id": 3}]
    np.testing.assert_array_equal(semantic_mask(anns, 2, 2), [[0, 3], [3, 0]])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_images": 0}, "n_images"),
        ({"n_images": 2, "image_size": 8}, "image_size"),
        ({"n_images": 2, "split": "test"}, "split"),
        ({"n_images": 2, "min_objects": 3, "max_objects": 2}, "min_objects"),
    ],
)
def test_bad_arguments_are_refused(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_scenes(tmp_path / "x", **kwargs)
