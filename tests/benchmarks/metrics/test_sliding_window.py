"""Sliding-window segmentation inference: hand-computed windows and counts, parity with whole-image inference
for a per-pixel network, and slide-mode evaluation of an ADE20K fixture at full annotation resolution."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from benchmarks.data import ade20k
from benchmarks.data.segmentation_pairs import IGNORE_INDEX, keep_ratio_size, shift_labels
from benchmarks.metrics.segmentation import confusion_matrix, segmentation_scores
from benchmarks.metrics.sliding_window import sliding_window_logits, window_count, window_starts
from benchmarks.tasks import segmentation
from benchmarks.tasks.protocol import RunContext
from fixture_writers import write_ade20k_sizes

# (height, width) of the validation images: both orientations, and one with a side shorter than the others
VAL_SIZES = [(40, 60), (50, 36), (33, 70)]


def test_window_starts_push_the_last_window_back_to_the_border():
    assert window_starts(5, 3, 2) == [0, 2]
    assert window_starts(7, 3, 2) == [0, 2, 4]
    assert window_starts(8, 3, 2) == [0, 2, 4, 5]  # the last step is shortened to end at the border
    assert window_starts(683, 512, 341) == [0, 171]  # an ADE20K image 512 x 683 after the test resize
    assert window_starts(512, 512, 341) == [0] and window_starts(300, 512, 341) == [0]
    with pytest.raises(ValueError, match="skip|outside"):
        window_starts(10, 3, 4)


def test_count_map_of_a_5x7_image_with_crop_3_stride_2():
    # rows: windows [0,3) and [2,5) -> 1 1 2 1 1; columns: [0,3) [2,5) [4,7) -> 1 1 2 1 2 1 1; count = product
    expected = torch.tensor(
        [
            [1, 1, 2, 1, 2, 1, 1],
            [1, 1, 2, 1, 2, 1, 1],
            [2, 2, 4, 2, 4, 2, 2],
            [1, 1, 2, 1, 2, 1, 1],
            [1, 1, 2, 1, 2, 1, 1],
        ]
    )
    assert torch.equal(window_count(5, 7, 3, 2), expected)


def test_overlapping_windows_are_averaged_pixel_by_pixel():
    # each window answers with its own left edge everywhere; a pixel gets the mean of its windows' answers
    columns = torch.arange(7.0).expand(1, 1, 5, 7)

    def left_edge(crops):
        return crops.amin(dim=(2, 3), keepdim=True).expand_as(crops)

    averaged = sliding_window_logits(left_edge, columns, crop=3, stride=2, batch_size=4)
    # column 2 is in windows starting at 0 and 2 -> 1; column 4 in those at 2 and 4 -> 3; the others in one
    assert torch.equal(averaged[0, 0], torch.tensor([0.0, 0, 1, 2, 3, 4, 4]).expand(5, 7))


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_a_per_pixel_network_gives_the_same_scores_sliding_as_on_the_whole_image(batch_size):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 1), nn.ReLU(), nn.Conv2d(16, 5, 1)).eval()
    images = torch.randn(2, 3, 23, 31)
    with torch.no_grad():
        whole = net(images)
        slid = sliding_window_logits(net, images, crop=8, stride=5, batch_size=batch_size)
    assert slid.shape == whole.shape
    assert torch.allclose(slid, whole, rtol=1e-6, atol=1e-7)


def test_a_network_with_spatial_context_differs_near_window_borders():
    torch.manual_seed(0)
    net = nn.Conv2d(3, 4, 3, padding=1).eval()  # zero padding at each window's border
    images = torch.randn(1, 3, 12, 12)
    with torch.no_grad():
        whole, slid = net(images), sliding_window_logits(net, images, crop=8, stride=4)
    # windows [0, 8) and [4, 12) per axis: only rows/columns 4 and 7 touch a window border inside the image
    inner = torch.tensor([0, 1, 2, 3, 5, 6, 8, 9, 10, 11])
    assert torch.allclose(slid[..., inner, :][..., inner], whole[..., inner, :][..., inner], atol=1e-6)
    assert not torch.allclose(slid[..., 4, :], whole[..., 4, :], atol=1e-3)


def test_keep_ratio_resize_follows_mmsegs_ade20k_test_scale():
    assert keep_ratio_size((683, 512), 512) == (683, 512)  # already 512 on the short side
    assert keep_ratio_size((640, 480), 512) == (683, 512)  # 640 * 512/480 = 682.67
    assert keep_ratio_size((256, 2048), 512) == (256, 2048)  # the 2048 cap on the long side wins
    assert keep_ratio_size((60, 40), 32) == (48, 32)


def test_slide_evaluation_scores_full_resolution_masks_like_whole_image_inference(tmp_path):
    write_ade20k_sizes(tmp_path, [(40, 40)], VAL_SIZES)
    cfg = segmentation.Config(
        dataset="ade20k", data_root=str(tmp_path), input_size=32, eval_mode="slide", eval_crop=32,
        eval_stride=21,
    )
    ctx = RunContext(device=torch.device("cpu"), seed=0, out_dir=tmp_path, cache_dir=tmp_path)
    _, val_set, num_classes, _ = segmentation.build_datasets(cfg, ctx)
    image, mask = val_set[0]
    assert image.shape == (3, 32, 48) and mask.shape == (40, 60)  # image short side 32; the mask untouched
    assert val_set[2][0].shape == (3, 32, 68) and val_set[2][1].shape == (33, 70)

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 1), nn.ReLU(), nn.Conv2d(16, num_classes, 1)).eval()
    with torch.no_grad():
        metrics = segmentation.make_evaluator(val_set, num_classes, 4, ctx.device, slide=(32, 21))(net)
        # second route: whole image through the per-pixel net, upsampled to the annotation read from disk
        confusion, loss_sum, pixels = torch.zeros(num_classes, num_classes, dtype=torch.int64), 0.0, 0
        for i, (_, mask_path) in enumerate(val_set.pairs):
            labels = torch.from_numpy(shift_labels(np.asarray(Image.open(mask_path))))
            logits = F.interpolate(net(val_set[i][0][None]), size=labels.shape, mode="bilinear")
            loss = F.cross_entropy(logits, labels[None], ignore_index=IGNORE_INDEX, reduction="sum")
            loss_sum += float(loss)
            pixels += int((labels != IGNORE_INDEX).sum())
            confusion += confusion_matrix(logits.argmax(1)[0], labels, num_classes, IGNORE_INDEX)
    expected = {**segmentation_scores(confusion), "loss": loss_sum / pixels}
    assert metrics.keys() == expected.keys()
    for key in expected:
        assert metrics[key] == pytest.approx(expected[key], rel=1e-5), key
    assert pixels == sum((h - 2) * w for h, w in VAL_SIZES)  # every labelled pixel at full resolution


def test_bad_eval_mode_and_stride_are_actionable(tmp_path):
    ctx = RunContext(device=torch.device("cpu"), seed=0, out_dir=tmp_path, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="eval_mode='sliding'.*resize, slide"):
        segmentation.setup(segmentation.Config(eval_mode="sliding"), ctx)
    with pytest.raises(ValueError, match=r"eval_stride=40 must lie in \[1, eval_crop=32\]"):
        segmentation.setup(segmentation.Config(eval_mode="slide", eval_crop=32, eval_stride=40), ctx)
    assert segmentation.slide_window(segmentation.Config(eval_mode="slide", eval_crop=512)) == (512, 341)


def test_paper_config_evaluates_ade20k_by_sliding_window(tmp_path):
    from benchmarks.recipes import compose_run

    cfg, _ = compose_run("paper/segmentation", "sema", 0, str(tmp_path), ["task.data_root=/data"])
    task = cfg.task
    assert (task.dataset, task.eval_mode, task.eval_crop, task.eval_stride) == ("ade20k", "slide", 512, 341)
    assert segmentation.slide_window(task) == (512, 341)


@pytest.mark.slow
def test_smoke_run_on_an_ade20k_fixture_of_mixed_sizes_in_slide_mode(tmp_path):
    from benchmarks import engine
    from benchmarks.recipes import compose_run

    write_ade20k_sizes(tmp_path / "data", [(40, 56), (48, 40), (36, 36), (44, 60)], VAL_SIZES)
    assert len(ade20k.ade20k_pairs(str(tmp_path / "data"), "val")) == 3
    overrides = [
        "logger.wandb.mode=disabled",
        "trainer.num_threads=1",
        "task.dataset=ade20k",
        f"task.data_root={tmp_path / 'data'}",
        "task.input_size=32",
        "task.eval_mode=slide",
        "task.eval_crop=32",
        "task.eval_stride=21",
    ]
    cfg, run_dir = compose_run("smoke/segmentation", "sema", 0, str(tmp_path / "runs"), overrides)
    result = engine.run(cfg, run_dir)
    assert result["status"] == "completed" and result["dataset"] == "ade20k", result["error"]
    assert set(result["final"]) == {"miou", "pixel_acc", "macc", "loss"}
    assert 0 <= result["final"]["miou"] <= 100 and result["final"]["loss"] > 0
    assert any("sliding windows" in note and "full annotation resolution" in note for note in result["notes"])
    assert json.loads((run_dir / "result.json").read_text())["config"]["task"]["eval_mode"] == "slide"
