"""Image generation: a DDPM smoke run through the engine, seeded evaluation sampling, and data errors."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from benchmarks import engine
from benchmarks.data.paths import MissingDataset
from benchmarks.recipes import compose_run
from benchmarks.tasks import generation
from benchmarks.tasks.protocol import RunContext

FAST = ["logger.wandb.mode=disabled", "trainer.num_threads=1"]


@pytest.mark.slow
def test_smoke_run_writes_result_proxy_fid_and_a_sample_grid(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMA_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SEMA_INCEPTION_WEIGHTS", raising=False)
    cfg, run_dir = compose_run("smoke/generation", "sema", 0, str(tmp_path / "runs"), FAST)
    engine.run(cfg, run_dir)
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "completed" and result["headline"] == "denoise_loss"
    assert result["higher_is_better"] is False and result["dataset"] == "fashion_mnist-32"
    assert set(result["final"]) == {"denoise_loss", "proxy_fid"} and result["final"]["proxy_fid"] >= 0
    assert any("proxy_fid" in note and "NOT comparable" in note for note in result["notes"])
    with Image.open(run_dir / "samples.png") as grid:  # 4x4 grid of 32-px images with 2-px padding
        assert grid.size == (4 * 34 + 2, 4 * 34 + 2)
    assert list((tmp_path / "cache" / "fid_proxy").glob("fashion_mnist-32_c1_n512_v*.pt"))


def _ctx(tmp_path):
    return RunContext(
        device=torch.device("cpu"), seed=0, out_dir=tmp_path / "run", cache_dir=tmp_path / "cache"
    )


@pytest.mark.slow
def test_evaluation_uses_fixed_noise_so_methods_compare_on_the_same_terms(tmp_path):
    cfg = generation.Config(
        model="unet-tiny",
        timesteps=20,
        sample_steps=3,
        fid_samples=8,
        fid_real_samples=32,
        proxy_train_samples=256,
        grid_size=2,
        max_eval_samples=16,
        eval_batch_size=8,
    )
    torch.manual_seed(0)
    first = generation.setup(cfg, _ctx(tmp_path))
    torch.manual_seed(1)  # a different global RNG state must not change the evaluation
    second = generation.setup(cfg, _ctx(tmp_path))
    second.model.load_state_dict(first.model.state_dict())
    first.model.eval(), second.model.eval()
    with torch.no_grad():
        assert first.evaluate(first.model) == second.evaluate(second.model)
        a = first.final_evaluate(first.model)
        torch.randn(100)
        b = second.final_evaluate(second.model)
    assert a == b and set(a) == {"proxy_fid"}


def test_the_fid_reference_is_the_test_split_or_the_training_images(tmp_path):
    base = dict(model="unet-tiny", timesteps=20, sample_steps=3, fid_samples=8, fid_real_samples=32,
                proxy_train_samples=256, grid_size=2, max_eval_samples=16, eval_batch_size=8)
    values = {}
    for reference in ("test", "train"):
        torch.manual_seed(0)
        setup = generation.setup(generation.Config(fid_reference=reference, **base), _ctx(tmp_path / reference))
        assert f"vs 32 {reference} images" in setup.notes[-1]
        setup.model.eval()
        with torch.no_grad():
            values[reference] = setup.final_evaluate(setup.model)["proxy_fid"]
    assert values["test"] != values["train"]  # the same samples against another reference set
    with pytest.raises(ValueError, match="task.fid_reference='val' is not allowed; choose one of: test, train"):
        generation.setup(generation.Config(fid_reference="val", **base), _ctx(tmp_path))


def test_cifar10_layout_is_read_into_three_channel_images_in_unit_range(tmp_path):
    import pickle

    import numpy as np

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (4, 3 * 32 * 32), dtype=np.uint8)
        data[0] = 255  # one white image per file
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": [0, 1, 2, 3]}, f)
    cfg = generation.Config(dataset="cifar10", data_root=str(tmp_path), model="unet-tiny")
    train_set, test_images, proxy_data, name = generation.load_data(cfg)
    assert name == "cifar10" and len(train_set) == 20 and test_images.shape == (4, 3, 32, 32)
    assert test_images.min() >= -1 and test_images.max() <= 1 and torch.all(test_images[0] == 1)
    images, labels, multilabel = proxy_data(8)
    assert images.shape == (8, 3, 32, 32) and labels.tolist() == [0, 1, 2, 3] * 2 and multilabel is False


def test_bad_choices_missing_datasets_and_missing_inception_weights_are_actionable(tmp_path):
    ctx = _ctx(tmp_path)
    with pytest.raises(ValueError, match="unet-ddpm"):
        generation.setup(generation.Config(model="dit"), ctx)
    with pytest.raises(ValueError, match="fashion_mnist, cifar10, celeba"):
        generation.setup(generation.Config(dataset="mnist", model="unet-tiny"), ctx)
    with pytest.raises(MissingDataset, match="cifar-10-batches-py"):
        generation.setup(generation.Config(dataset="cifar10", data_root=str(tmp_path)), ctx)
    with pytest.raises(MissingDataset, match="img_align_celeba"):
        generation.setup(generation.Config(dataset="celeba", data_root=str(tmp_path), image_size=64), ctx)
    with pytest.raises(FileNotFoundError, match="weights-inception"):
        generation.setup(generation.Config(model="unet-tiny", inception_weights=str(tmp_path)), ctx)
