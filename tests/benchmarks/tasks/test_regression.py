"""Regression task: metrics against hand-computed values, RCF-MNIST and an AgeDB fixture end to end, input errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import engine
from benchmarks.data.paths import MissingDataset
from benchmarks.recipes import compose_run
from benchmarks.tasks import regression
from benchmarks.tasks.protocol import RunContext
from fixture_writers import write_age_csv

FAST = ["logger.wandb.mode=disabled", "trainer.num_threads=1"]


def ctx(tmp_path: Path) -> RunContext:
    return RunContext(device=torch.device("cpu"), seed=0, out_dir=tmp_path, cache_dir=tmp_path)


def test_mae_and_rmse():
    metrics = regression.regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0, 1.0]))
    assert metrics["mae"] == pytest.approx(1.0) and metrics["rmse"] == pytest.approx(math.sqrt(5 / 3))


def test_decade_and_shot_buckets():
    age = np.array([25.0, 27.0, 31.0])
    pred = np.array([20.0, 27.0, 41.0])
    assert regression.decade_mae(pred, age) == pytest.approx({"mae_age_20_29": 2.5, "mae_age_30_39": 10.0})
    train_ages = np.array([25.0] * 150 + [27.0] * 50 + [31.0] * 3)  # 25: many, 27: medium, 31: few
    assert regression.shot_mae(pred, age, train_ages) == pytest.approx(
        {"mae_many": 5.0, "mae_medium": 0.0, "mae_few": 10.0})


def test_rcf_setup_predicts_in_degrees(tmp_path):
    cfg = regression.Config(model="tiny_cnn", max_train_samples=64, max_eval_samples=32, batch_size=16)
    setup = regression.setup(cfg, ctx(tmp_path))
    x, y = setup.train_set[0]
    assert x.shape == (3, 32, 32) and y.item() % 6 == 0
    assert setup.headline == "mae" and setup.higher_is_better is False and "offline" in setup.dataset
    batch = next(iter(torch.utils.data.DataLoader(setup.train_set, batch_size=16)))
    setup.train_loss(setup.model, batch).backward()
    setup.model.eval()
    with torch.no_grad():
        metrics = setup.evaluate(setup.model)
    assert set(metrics) == {"mae", "rmse"} and 0 < metrics["mae"] <= metrics["rmse"] < 360


def test_rcf_crop_padding_shifts_the_image_by_at_most_the_padding_and_keeps_the_angle(tmp_path):
    images = np.zeros((1, 4, 4, 3), np.uint8)
    images[0, 1, 2] = 255  # one white pixel at row 1, column 2
    data = regression.ArrayRegression(images, np.array([36.0]), np.zeros(3), np.ones(3), pad=2)
    torch.manual_seed(0)
    seen = set()
    for _ in range(200):
        x, y = data[0]
        assert y.item() == 36.0 and x.shape == (3, 4, 4)
        where = (x[0] == 1.0).nonzero().tolist()
        assert len(where) <= 1  # shifted (maybe out of the crop), never duplicated
        if where:
            seen.add(tuple(where[0]))
    assert {(r, c) for r in range(4) for c in range(4) if abs(r - 1) <= 2 and abs(c - 2) <= 2} == seen
    with pytest.raises(ValueError, match="task.crop_padding=-1 must be >= 0 pixels"):
        regression.setup(regression.Config(model="tiny_cnn", max_train_samples=8, max_eval_samples=4,
                                           crop_padding=-1), ctx(tmp_path))


def test_agedb_fixture_trains_and_reports_buckets(tmp_path):
    rows = [(f"agedb/{i}.png", age, "train") for i, age in enumerate([20, 22, 35, 36, 51, 52, 60, 61])]
    rows += [(f"agedb/t{i}.png", age, "test") for i, age in enumerate([21, 37, 55, 90])]
    write_age_csv(tmp_path / "dir", rows, shade_step=10)
    cfg = regression.Config(dataset="agedb", data_root=str(tmp_path / "dir"), model="tiny_cnn", image_size=16,
                            batch_size=4)
    setup = regression.setup(cfg, ctx(tmp_path))
    x, y = setup.train_set[0]
    assert x.shape == (3, 16, 16) and y == pytest.approx(20.0)
    batch = next(iter(torch.utils.data.DataLoader(setup.train_set, batch_size=4)))
    setup.train_loss(setup.model, batch).backward()
    setup.model.eval()
    with torch.no_grad():
        metrics = setup.evaluate(setup.model)
    assert {"mae", "rmse", "mae_few", "mae_age_20_29", "mae_age_90_99"} <= set(metrics)
    assert "mae_many" not in metrics  # no age has > 100 training images here


def test_bad_choices_and_missing_roots_are_explained(tmp_path):
    with pytest.raises(ValueError, match="rcf_mnist, agedb, imdb_wiki"):
        regression.setup(regression.Config(dataset="utkface"), ctx(tmp_path))
    with pytest.raises(ValueError, match="l1, mse"):
        regression.setup(regression.Config(loss="huber"), ctx(tmp_path))
    with pytest.raises(MissingDataset, match="agedb.csv"):
        regression.setup(regression.Config(dataset="agedb", data_root=str(tmp_path)), ctx(tmp_path))


@pytest.mark.slow
def test_sema_smoke_run_through_the_engine(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMA_BENCH_CACHE", str(tmp_path / "cache"))
    cfg, run_dir = compose_run("smoke/regression", "sema", 0, str(tmp_path), FAST)
    result = engine.run(cfg, run_dir)
    assert result["status"] == "completed" and result["headline"] == "mae" and result["higher_is_better"] is False
    assert [h["switched"] for h in result["history"]] == [False, True]
    assert set(result["final"]) == {"mae", "rmse"} and result["best"]["mae"] <= result["history"][0]["avg"]["mae"]
    assert any("offline crops" in note for note in result["notes"])
