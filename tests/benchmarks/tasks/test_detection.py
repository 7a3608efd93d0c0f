"""Detection task: the COCO reader on procedural scenes and on a COCO 2017 fixture, the output -> COCO results
conversion, config checks, and smoke runs through the engine that write a valid result.json."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from benchmarks import engine
from benchmarks.data.coco import coco2017_split, detection_collate, procedural_split
from benchmarks.data.paths import MissingDataset
from benchmarks.data.procedural_coco import decode_segmentation
from benchmarks.recipes import compose_run
from benchmarks.tasks import detection
from fixture_writers import write_coco2017

FAST = ["logger.wandb.mode=disabled", "trainer.num_threads=1"]


def test_procedural_targets_are_the_json_boxes_labels_and_masks(tmp_path):
    ds = procedural_split(tmp_path, "train", n_images=3, image_size=48, seed=1, max_objects=3)
    coco = json.loads(ds.annotation_file.read_text())
    assert ds.num_classes == 4 and ds.label_to_category_id == [0, 1, 2, 3, 4]
    for index in range(3):
        image, target = ds[index]
        assert image.shape == (3, 48, 48) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
        anns = [a for a in coco["annotations"] if a["image_id"] == target["image_id"]]
        expected = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)])
        torch.testing.assert_close(target["boxes"], expected)
        assert target["labels"].tolist() == [a["category_id"] for a in anns]
        for mask, ann in zip(target["masks"], anns):
            np.testing.assert_array_equal(mask.numpy().astype(bool), decode_segmentation(ann["segmentation"], 48, 48))


def test_horizontal_flip_moves_boxes_and_masks_together(tmp_path):
    plain = procedural_split(tmp_path, "train", n_images=2, image_size=48, seed=1)
    flipped = procedural_split(tmp_path, "train", n_images=2, image_size=48, seed=1, hflip_prob=1.0)
    (image, target), (image_f, target_f) = plain[1], flipped[1]
    torch.testing.assert_close(image_f, image.flip(-1))
    x1, y1, x2, y2 = target["boxes"].unbind(1)
    torch.testing.assert_close(target_f["boxes"], torch.stack([48 - x2, y1, 48 - x1, y2], 1))
    torch.testing.assert_close(target_f["masks"], target["masks"].flip(-1))
    for mask, box in zip(target_f["masks"], target_f["boxes"]):  # the flipped box is still the mask's tight box
        rows, cols = torch.nonzero(mask, as_tuple=True)
        assert box.tolist() == [cols.min().item(), rows.min().item(), cols.max().item() + 1, rows.max().item() + 1]


def test_coco2017_layout_maps_categories_and_skips_crowds(tmp_path):
    write_coco2017(tmp_path)
    ds = coco2017_split(tmp_path, "train", skip_empty=True)
    assert len(ds) == 2 and ds.label_to_category_id == [0, 3, 18, 90] and ds.class_names == ["car", "dog", "toothbrush"]
    image, target = ds[0]
    assert image.shape == (3, 48, 48)
    assert target["labels"].tolist() == [2, 3]  # dog -> 2, toothbrush -> 3; the crowd region is left out
    torch.testing.assert_close(target["boxes"], torch.tensor([[4.0, 6.0, 24.0, 16.0], [26.0, 2.0, 38.0, 18.0]]))
    # Polygon masks are rasterised by pycocotools; a 20 x 10 rectangle covers about 200 pixels.
    assert abs(int(target["masks"][0].sum()) - 200) <= 31
    images, targets = detection_collate([ds[0], ds[1]])
    assert len(images) == len(targets) == 2


def test_missing_or_incomplete_coco_root_says_what_to_put_where(tmp_path):
    with pytest.raises(MissingDataset, match="instances_train2017.json"):
        coco2017_split(None, "train")
    (tmp_path / "train2017").mkdir()
    with pytest.raises(MissingDataset, match="annotations_trainval2017.zip"):
        coco2017_split(tmp_path, "train")
    with pytest.raises(ValueError, match="'train' or 'val'"):
        coco2017_split(tmp_path, "test")


def test_outputs_become_coco_results_with_category_ids_xywh_boxes_and_rle_masks():
    masks = torch.zeros(2, 1, 8, 10)
    masks[0, 0, 1:3, 2:6] = 0.9
    masks[0, 0, 5, 5] = 0.4  # below the 0.5 threshold
    masks[1, 0, 4:8, 0:2] = 0.6
    output = {"boxes": torch.tensor([[2.0, 1.0, 6.0, 3.0], [0.0, 4.0, 2.0, 8.0]]), "labels": torch.tensor([3, 1]),
              "scores": torch.tensor([0.9, 0.25]), "masks": masks}
    results = detection.to_coco_results([output], [7], [0, 3, 18, 90])
    assert [r["category_id"] for r in results] == [90, 3]
    assert results[0]["bbox"] == [2.0, 1.0, 4.0, 2.0] and results[1]["bbox"] == [0.0, 4.0, 2.0, 4.0]
    assert results[0]["image_id"] == 7 and results[1]["score"] == pytest.approx(0.25)
    first = decode_segmentation(results[0]["segmentation"], 8, 10)
    assert first.sum() == 8 and first[1:3, 2:6].all() and not first[5, 5]
    assert decode_segmentation(results[1]["segmentation"], 8, 10).sum() == 8
    boxes_only = detection.to_coco_results([{k: v for k, v in output.items() if k != "masks"}], [7], [0, 3, 18, 90])
    assert all("segmentation" not in r for r in boxes_only)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"model": "yolo_resnet18_fpn"}, "task.model"),
        ({"model": "retinanet_mobilenet_v3_fpn"}, "task.model"),
        ({"dataset": "voc"}, "task.dataset"),
        ({"framework": "detectron2"}, "task.framework"),
        ({"norm": "frozen_bn"}, "backbone_weights"),
        ({"anchor_sizes": [16, 32]}, "anchor_sizes"),
    ],
)
def test_bad_config_values_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        detection.check_config(detection.Config(**overrides))


@pytest.mark.slow
@pytest.mark.parametrize("model", ["retinanet_resnet18_fpn", "fcos_resnet18_fpn", "fasterrcnn_resnet18_fpn",
                                   "maskrcnn_resnet18_fpn", "fasterrcnn_mobilenet_v3_fpn"])
def test_every_architecture_trains_one_step_and_predicts(model, tmp_path):
    torch.manual_seed(0)
    cfg = detection.Config(model=model, image_size=48, fpn_channels=32, anchor_sizes=[16, 32, 64, 128, 256],
                           box_batch_size_per_image=32, rpn_top_n_train=50, rpn_top_n_test=50,
                           detections_per_image=5)
    ds = procedural_split(tmp_path, "train", n_images=2, image_size=48, seed=0,
                          with_masks=model.startswith("maskrcnn"))
    net = detection.build_model(cfg, ds.num_classes)
    images, targets = detection_collate([ds[0], ds[1]])
    losses = net(images, targets)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    net.eval()
    with torch.no_grad():
        outputs = net(images)
    assert len(outputs) == 2 and all(len(o["boxes"]) <= 5 for o in outputs)
    assert ("masks" in outputs[0]) == model.startswith("maskrcnn")


def test_setup_refuses_the_mmdet_framework_with_a_pointer_to_run(tmp_path):
    from benchmarks.tasks.protocol import RunContext

    ctx = RunContext(device=torch.device("cpu"), seed=0, out_dir=tmp_path, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="benchmarks.frameworks"):
        detection.setup(detection.Config(framework="mmdet"), ctx)


@pytest.mark.slow
def test_smoke_run_on_procedural_scenes_writes_a_valid_result(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMA_BENCH_CACHE", str(tmp_path / "cache"))
    cfg, run_dir = compose_run("smoke/detection", "sema", 0, str(tmp_path / "runs"), FAST)
    result = engine.run(cfg, run_dir)
    on_disk = json.loads((run_dir / "result.json").read_text())
    assert on_disk["status"] == result["status"] == "completed"
    assert on_disk["headline"] == "bbox_ap" and on_disk["higher_is_better"] is True
    assert on_disk["dataset"] == "procedural_coco (offline)"
    assert {"bbox_ap", "ap50", "ap75", "ar100"} <= set(on_disk["final"]) and "mask_ap" not in on_disk["final"]
    assert all(0.0 <= v <= 1.0 for v in on_disk["final"].values())
    assert [h["epoch"] for h in on_disk["history"]] == [1, 2]
    assert (run_dir / "weights" / "average.safetensors").exists()


@pytest.mark.slow
def test_smoke_run_of_mask_rcnn_on_a_coco2017_fixture_reports_mask_ap(tmp_path):
    write_coco2017(tmp_path / "coco", size=64)
    cfg, run_dir = compose_run(
        "smoke/detection", "baseline", 0, str(tmp_path / "runs"),
        [*FAST, "task.dataset=coco2017", f"task.data_root={tmp_path / 'coco'}", "task.model=maskrcnn_resnet18_fpn",
         "task.min_size=64", "task.max_size=64", "task.batch_size=2", "task.detections_per_image=10",
         "trainer.epochs=1", "trainer.max_steps_per_epoch=1"],
    )
    result = engine.run(cfg, run_dir)
    assert result["status"] == "completed" and result["dataset"] == "coco2017"
    assert {"bbox_ap", "mask_ap", "mask_ap50", "mask_ap75"} <= set(result["final"])
