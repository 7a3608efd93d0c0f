"""task.framework=mmdet end to end: RetinaNet and Mask R-CNN through mmdet's Runner with the sema hook write the
same result.json as the torchvision path. Needs OpenMMLab (bash scripts/install_openmmlab.sh .venv); CI runs that
script first and sets SEMA_REQUIRE_OPENMMLAB=1, which turns a missing install into a failure instead of a skip."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

from benchmarks.recipes import compose_run
from benchmarks import frameworks

if importlib.util.find_spec("mmdet") is None and os.environ.get("SEMA_REQUIRE_OPENMMLAB") == "1":
    raise ImportError("SEMA_REQUIRE_OPENMMLAB=1 but mmdet is not installed: run bash scripts/install_openmmlab.sh")
pytestmark = [
    pytest.mark.openmmlab,
    pytest.mark.skipif(importlib.util.find_spec("mmdet") is None,
                       reason="OpenMMLab not installed (bash scripts/install_openmmlab.sh .venv)"),
]
FAST = ["logger.wandb.mode=disabled", "trainer.num_threads=1", "task.framework=mmdet"]


def test_retinanet_smoke_run_with_sema_writes_a_valid_result(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMA_BENCH_CACHE", str(tmp_path / "cache"))
    cfg, run_dir = compose_run("smoke/detection", "sema", 0, str(tmp_path / "runs"), FAST)
    result = frameworks.run(cfg, run_dir)
    on_disk = json.loads((run_dir / "result.json").read_text())
    assert on_disk["status"] == result["status"] == "completed"
    assert on_disk["headline"] == "bbox_ap" and on_disk["model"] == "retinanet_resnet18_fpn"
    assert [h["epoch"] for h in on_disk["history"]] == [1, 2]
    assert [h["switched"] for h in on_disk["history"]] == [False, True]
    assert {"bbox_ap", "ap50", "ap75"} <= set(on_disk["final"]) and "mask_ap" not in on_disk["final"]
    assert all(0.0 <= v <= 1.0 for v in on_disk["final"].values())
    assert on_disk["final"] == on_disk["history"][-1]["avg"]
    assert (run_dir / "weights" / "online.safetensors").exists()
    assert (run_dir / "weights" / "average.safetensors").exists()


def test_mask_rcnn_smoke_run_reports_mask_ap(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMA_BENCH_CACHE", str(tmp_path / "cache"))
    cfg, run_dir = compose_run("smoke/detection", "baseline", 0, str(tmp_path / "runs"),
                               [*FAST, "task.model=maskrcnn_resnet18_fpn", "trainer.epochs=1",
                                "trainer.max_steps_per_epoch=2", "task.detections_per_image=20"])
    result = frameworks.run(cfg, run_dir)
    assert result["status"] == "completed" and result["history"][0]["avg"] is None
    assert {"bbox_ap", "mask_ap", "mask_ap50", "mask_ap75"} <= set(result["final"])


@pytest.mark.slow
@pytest.mark.parametrize("recipe,model", [("paper/detection", "maskrcnn_resnet18_fpn"),
                                          ("paper/detection_retinanet", "retinanet_resnet18_fpn")])
def test_the_paper_detection_recipes_twin_runs_through_mmdet(recipe, model, tmp_path, monkeypatch):
    import torch
    import torchvision
    from fixture_writers import write_coco2017

    monkeypatch.setenv("SEMA_BENCH_CACHE", str(tmp_path / "cache"))
    write_coco2017(tmp_path / "coco", size=64)
    weights = tmp_path / "resnet18.pth"  # torchvision's file format, random weights: frozen BN needs a backbone file
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    cfg, run_dir = compose_run(recipe, "sema", 0, str(tmp_path / "runs"), [
        *FAST, f"task.model={model}", f"task.data_root={tmp_path / 'coco'}", f"task.backbone_weights={weights}",
        "trainer.epochs=1", "trainer.max_steps_per_epoch=2", "task.batch_size=2",
        "task.eval_batch_size=1", "task.num_workers=0", "task.min_size=64", "task.max_size=64",
        "task.detections_per_image=10"])
    result = frameworks.run(cfg, run_dir)
    assert result["status"] == "completed" and result["dataset"] == "coco2017" and result["model"] == model
    assert result["runtime"]["peak_lr"] == pytest.approx(cfg.optim.lr * 2 / 16)  # the 1x lr is for batch 16
    assert "bbox_ap" in result["final"] and ("mask_ap" in result["final"]) == model.startswith("maskrcnn")
