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
