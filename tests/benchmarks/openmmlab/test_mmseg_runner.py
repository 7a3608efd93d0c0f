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
from benchmarks.recipes import compose_run
from fixture_writers import write_ade20k_sizes

if importlib.util.find_spec("mmseg") is None and os.environ.get("SEMA_REQUIRE_OPENMMLAB") == "1":
    raise ImportError("SEMA_REQUIRE_OPENMMLAB=1 but mmseg is not installed: run bash scripts/install_openmmlab.sh")
pytestmark = [
    pytest.mark.openmmlab,
    pytest.mark.skipif(importlib.util.find_spec("mmseg") is None,
                       reason="OpenMMLab not installed (bash scripts/install_openmmlab.sh .venv)"),
]


def test_fcn_smoke_run_with_sema_writes_a_valid_result(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMA_BENCH_CACHE", str(tmp_path / "cache"))
    cfg, run_dir = compose_run("smoke/segmentation", "sema", 0, str(tmp_path / "runs"),
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
    cfg, run_dir = compose_run("smoke/segmentation", "ema", 0, str(tmp_path / "runs"),
                               ["logger.wandb.mode=disabled", "trainer.num_threads=1", "trainer.epochs=1",
                                "task.framework=mmseg", "task.model=fcn_resnet18"])
    result = engine.run(cfg, run_dir)
    assert result["status"] == "completed" and result["method"] == "ema"
    assert any("mmseg" in note for note in result["notes"])
    assert json.loads((run_dir / "result.json").read_text())["final"] == result["final"]


def test_slide_mode_uses_mmsegs_sliding_window_test_on_ade20k_of_mixed_sizes(tmp_path, monkeypatch):
    from benchmarks.openmmlab.mmseg_runner import model_cfg

    monkeypatch.setenv("SEMA_BENCH_CACHE", str(tmp_path / "cache"))
    sizes = [(40, 56), (48, 40), (36, 60), (44, 44)]
    write_ade20k_sizes(tmp_path / "data", sizes, sizes)
    cfg, run_dir = compose_run("smoke/segmentation", "sema", 0, str(tmp_path / "runs"),
                               ["logger.wandb.mode=disabled", "trainer.num_threads=1", "trainer.epochs=1",
                                "task.framework=mmseg", "task.model=fcn_resnet18", "task.dataset=ade20k",
                                f"task.data_root={tmp_path / 'data'}", "task.input_size=32",
                                "task.eval_mode=slide", "task.eval_crop=32", "task.eval_stride=21"])
    assert model_cfg(cfg.task, 150)["test_cfg"] == dict(mode="slide", crop_size=(32, 32), stride=(21, 21))
    result = run_mmseg(cfg, run_dir)
    assert result["status"] == "completed" and result["dataset"] == "ade20k"
    assert 0 <= result["final"]["miou"] <= 100
    assert any("sliding window" in note for note in result["notes"])


def test_framework_runs_refuse_trainer_options_they_do_not_follow(tmp_path):
    from benchmarks import engine

    cfg, run_dir = compose_run("smoke/segmentation", "ema", 0, str(tmp_path / "runs"),
                               ["task.framework=mmseg", "task.model=fcn_resnet18", "trainer.nan_check_every=5"])
    with pytest.raises(ValueError, match=r"task.framework=mmseg does not honour trainer.nan_check_every=5 .*"
                                         r"leave it at its default 50, or use task.framework=torchvision"):
        engine.run(cfg, run_dir)
    assert not (run_dir / "result.json").exists()  # refused before anything was written
    cfg, run_dir = compose_run("smoke/segmentation", "ema", 0, str(tmp_path / "runs"),
                               ["task.framework=mmseg", "task.model=fcn_resnet18", "trainer.amp=bf16"])
    with pytest.raises(ValueError, match=r"does not honour trainer.amp='bf16'; it accepts 'auto', 'off'"):
        engine.run(cfg, run_dir)
    cfg, run_dir = compose_run("smoke/segmentation", "ema", 0, str(tmp_path / "runs"),
                               ["task.framework=mmseg", "task.model=fcn_resnet18", "method.decay=2"])
    with pytest.raises(ValueError, match=r"method.decay=2"):  # validated like every run, before the runner
        engine.run(cfg, run_dir)


def test_swa_through_mmseg_re_estimates_the_batchnorm_statistics_of_its_average(tmp_path, monkeypatch):
    """method=swa task.framework=mmseg: the runner calls SWA's prepare_for_eval, as the engine does."""
    from safetensors.torch import load_file

    monkeypatch.setenv("SEMA_BENCH_CACHE", str(tmp_path / "cache"))
    cfg, run_dir = compose_run("smoke/segmentation", "swa", 0, str(tmp_path / "runs"),
                               ["logger.wandb.mode=disabled", "trainer.num_threads=1", "trainer.epochs=1",
                                "task.framework=mmseg", "task.model=fcn_resnet18", "method.bn_update_batches=2"])
    from benchmarks import engine

    result = engine.run(cfg, run_dir)
    assert result["status"] == "completed" and result["method_kwargs"]["bn_update_batches"] == 2
    average = load_file(run_dir / "weights" / "average.safetensors")
    counts = {k: int(v) for k, v in average.items() if k.endswith("num_batches_tracked")}
    assert counts and set(counts.values()) == {2}  # every BatchNorm layer re-estimated from exactly 2 batches
