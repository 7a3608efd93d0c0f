"""Semantic segmentation: smoke runs through the engine on the procedural scenes and on an ADE20K fixture."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from benchmarks import engine
from benchmarks.data.paths import MissingDataset
from benchmarks.recipes import compose_run
from benchmarks.tasks import segmentation
from benchmarks.tasks.protocol import RunContext
from fixture_writers import write_ade20k

FAST = ["logger.wandb.mode=disabled", "trainer.num_threads=1"]


@pytest.mark.slow
def test_smoke_run_on_procedural_scenes_writes_a_valid_result(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMA_BENCH_CACHE", str(tmp_path / "cache"))
    cfg, run_dir = compose_run("smoke/segmentation", "sema", 0, str(tmp_path / "runs"), FAST)
    engine.run(cfg, run_dir)
    result = json.loads((run_dir / "result.json").read_text())
    assert (
        result["status"] == "completed"
        and result["headline"] == "miou"
        and result["higher_is_better"] is True
    )
    assert result["dataset"] == "procedural_coco-semantic (offline)"
    final = result["final"]
    assert set(final) == {"miou", "pixel_acc", "macc", "loss"}
    assert 0 <= final["miou"] <= final["macc"] + 1e-9 <= 100 and 0 <= final["pixel_acc"] <= 100
    assert [h["epoch"] for h in result["history"]] == [1, 2]


@pytest.mark.slow
def test_smoke_run_on_an_ade20k_fixture(tmp_path):
    write_ade20k(tmp_path / "data", n_train=4, n_val=2, size=40)
    cfg, run_dir = compose_run(
        "smoke/segmentation",
        "baseline",
        0,
        str(tmp_path / "runs"),
        [*FAST, "task.dataset=ade20k", f"task.data_root={tmp_path / 'data'}", "task.input_size=32"],
    )
    result = engine.run(cfg, run_dir)
    assert result["status"] == "completed" and result["dataset"] == "ade20k"
    assert 0 <= result["final"]["miou"] <= 100


def test_evaluator_loss_is_the_mean_over_labelled_pixels(tmp_path):
    write_ade20k(tmp_path, n_train=1, n_val=2, size=40)
    ctx = RunContext(device=torch.device("cpu"), seed=0, out_dir=tmp_path, cache_dir=tmp_path)
    cfg = segmentation.Config(dataset="ade20k", data_root=str(tmp_path), input_size=32, eval_batch_size=1)
    train_set, val_set, num_classes, _ = segmentation.build_datasets(cfg, ctx)
    assert num_classes == 150 and len(train_set) == 1 and len(val_set) == 2
    torch.manual_seed(0)
    model = segmentation.build_model(cfg.model, num_classes).eval()
    with torch.no_grad():
        metrics = segmentation.make_evaluator(val_set, num_classes, 1, ctx.device)(model)
        images, masks = (torch.stack(t) for t in zip(*[val_set[i] for i in range(2)]))
        expected = F.cross_entropy(segmentation.logits_of(model, images), masks, ignore_index=255)
    assert metrics["loss"] == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize("name", ["fpn_resnet18", "lraspp_mobilenet_v3_large"])
def test_models_give_logits_at_the_input_size(name):
    torch.manual_seed(0)
    model = segmentation.build_model(name, num_classes=5).eval()
    with torch.no_grad():
        logits = segmentation.logits_of(model, torch.randn(2, 3, 48, 48))
    assert logits.shape == (2, 5, 48, 48) and torch.isfinite(logits).all()


def test_bad_choices_and_missing_dataset_are_actionable(tmp_path):
    ctx = RunContext(device=torch.device("cpu"), seed=0, out_dir=tmp_path, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="lraspp_mobilenet_v3_large.*fpn_<timm model name>"):
        segmentation.setup(segmentation.Config(model="unet"), ctx)
    with pytest.raises(ValueError, match="not a timm model"):
        segmentation.build_model("fpn_no_such_net", 5)
    with pytest.raises(ValueError, match="procedural_coco, ade20k"):
        segmentation.setup(segmentation.Config(dataset="cityscapes"), ctx)
    with pytest.raises(MissingDataset, match="ADEChallengeData2016"):
        segmentation.setup(segmentation.Config(dataset="ade20k", data_root=str(tmp_path)), ctx)
