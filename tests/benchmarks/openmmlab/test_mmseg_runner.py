"""task=segmentation task.framework=mmseg end to end: FCN-ResNet18 through mmseg's Runner with the sema hook on the
procedural scenes' semantic maps writes the same result.json as the torchvision path. Needs OpenMMLab
(bash scripts/install_openmmlab.sh .venv); SEMA_REQUIRE_OPENMMLAB=1 turns a missing install into a failure."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest
from omegaconf import open_dict

from benchmarks.openmmlab.mmseg_runner import run_mmseg
from benchmarks.suite import compose_run

if importlib.util.find_spec("mmseg") is None and os.environ.get("SEMA_REQUIRE_OPENMMLAB") == "1":
    raise ImportError("SEMA_REQUIRE_OPENMMLAB=1 but mmseg is not installed: run bash scripts/install_openmmlab.sh")
pytestmark = [
    pytest.mark.openmmlab,
    pytest.mark.skipif(importlib.util.find_spec("mmseg") is None,
                       reason="OpenMMLab not installed (bash scripts/install_openmmlab.sh .venv)"),
]


def test_fcn_smoke_run_with_sema_writes_a_valid_result(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMA_BENCH_CACHE", str(tmp_path / "cache"))
    cfg, run_dir = compose_run("segmentation", "sema", "smoke", 0, str(tmp_path / "runs"),
                               ["logger.wandb.mode=disabled", "trainer.num_threads=1", "trainer.epochs=2"])
    with open_dict(cfg):
        cfg.task.model = "fcn_resnet18"  # the segmentation task's torchvision models have no mmseg twin
    result = run_mmseg(cfg, run_dir)
    on_disk = json.loads((run_dir / "result.json").read_text())
    assert on_disk["status"] == result["status"] == "completed" and on_disk["headline"] == "miou"
    assert set(on_disk["final"]) == {"miou", "pixel_acc", "macc"}
    assert 0 <= on_disk["final"]["miou"] <= 100
    assert [h["epoch"] for h in on_disk["history"]] == [1, 2]
    assert (run_dir / "weights" / "average.safetensors").exists()


def test_engine_hands_framework_mmseg_runs_to_the_task_runner(tmp_path, monkeypatch):
    from benchmarks import engine

    monkeypatch.setenv("SEMA_BENCH_CACHE", str(tmp_path / "cache"))
    cfg, run_dir = compose_run("segmentation", "ema", "smoke", 0, str(tmp_path / "runs"),
                               ["logger.wandb.mode=disabled", "trainer.num_threads=1", "trainer.epochs=1",
                                "task.framework=mmseg", "task.model=fcn_resnet18"])
    result = engine.run(cfg, run_dir)
    assert result["status"] == "completed" and result["method"] == "ema"
    assert any("mmseg" in note for note in result["notes"])
    assert json.loads((run_dir / "result.json").read_text())["final"] == result["final"]


def _write_ade20k(root, sizes):
    """A tiny ADEChallengeData2016 with images of the given (height, width) in both splits; class bands 1..150."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, prefix in (("training", "ADE_train"), ("validation", "ADE_val")):
        (root / "ADEChallengeData2016" / "images" / split).mkdir(parents=True)
        (root / "ADEChallengeData2016" / "annotations" / split).mkdir(parents=True)
        for i, (height, width) in enumerate(sizes, 1):
            stem = root / "ADEChallengeData2016" / "{}" / split / f"{prefix}_{i:08d}"
            Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(
                str(stem).format("images") + ".jpg")
            labels = np.zeros((height, width), dtype=np.uint8)
            labels[2:] = (np.arange(width) // 7 % 150 + 1)[None, :]
            Image.fromarray(labels).save(str(stem).format("annotations") + ".png")


def test_slide_mode_uses_mmsegs_sliding_window_test_on_ade20k_of_mixed_sizes(tmp_path, monkeypatch):
    from benchmarks.openmmlab.mmseg_runner import model_cfg

    monkeypatch.setenv("SEMA_BENCH_CACHE", str(tmp_path / "cache"))
    _write_ade20k(tmp_path / "data", [(40, 56), (48, 40), (36, 60), (44, 44)])
    cfg, run_dir = compose_run("segmentation", "sema", "smoke", 0, str(tmp_path / "runs"),
                               ["logger.wandb.mode=disabled", "trainer.num_threads=1", "trainer.epochs=1",
                                "task.framework=mmseg", "task.model=fcn_resnet18", "task.dataset=ade20k",
                                f"task.data_root={tmp_path / 'data'}", "task.input_size=32",
                                "task.eval_mode=slide", "task.eval_crop=32", "task.eval_stride=21"])
    assert model_cfg(cfg.task, 150)["test_cfg"] == dict(mode="slide", crop_size=(32, 32), stride=(21, 21))
    result = run_mmseg(cfg, run_dir)
    assert result["status"] == "completed" and result["dataset"] == "ade20k"
    assert 0 <= result["final"]["miou"] <= 100
    assert any("sliding window" in note for note in result["notes"])
