"""Video task: OpenSTL-convention metrics against hand-computed values and scikit-image, SimVP shapes, a smoke
run through the engine, input errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks import engine
from benchmarks.models.simvp import build_simvp
from benchmarks.recipes import compose_run
from benchmarks.tasks import video
from benchmarks.tasks.protocol import RunContext

FAST = ["logger.wandb.mode=disabled", "trainer.num_threads=1"]


def test_mse_and_mae_sum_over_pixels_and_average_over_frames():
    true = torch.zeros(1, 2, 1, 2, 2)
    pred = true.clone()
    pred[0, 0] = 0.5  # frame 1: error 0.5 on each of 4 pixels; frame 2: exact
    mse, mae = video.frame_errors(pred, true)
    assert mse.tolist() == pytest.approx([(4 * 0.25 + 0) / 2])  # 0.5
    assert mae.tolist() == pytest.approx([(4 * 0.5 + 0) / 2])  # 1.0


def test_psnr_per_frame_with_unit_range():
    true = torch.zeros(1, 2, 1, 4, 4)
    pred = torch.full_like(true, 0.1)  # MSE 0.01 -> 20 dB
    pred[0, 1] = 0.01  # MSE 1e-4 -> 40 dB
    assert video.frame_psnr(pred, true).tolist() == pytest.approx([30.0])


def test_ssim_is_one_for_identical_frames_and_matches_scikit_image():
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(0)
    true = torch.rand(1, 1, 1, 32, 32, generator=g)
    pred = (true + 0.1 * torch.randn(1, 1, 1, 32, 32, generator=g)).clamp(0, 1)
    assert video.frame_ssim(true, true).item() == pytest.approx(1.0)
    a, b = (t[0, 0, 0].numpy().astype(np.float64) for t in (pred, true))
    reference = structural_similarity(a, b, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False)
    assert video.frame_ssim(pred, true).item() == pytest.approx(reference, abs=2e-3)


def test_simvp_maps_ten_frames_to_ten_frames():
    model = build_simvp("simvp_cpu")
    out = model(torch.rand(2, 10, 1, 64, 64))
    assert out.shape == (2, 10, 1, 64, 64)
    with pytest.raises(ValueError, match="10 frames"):
        model(torch.rand(2, 5, 1, 64, 64))
    with pytest.raises(ValueError, match="simvp_cpu"):
        build_simvp("convlstm")


def test_setup_evaluates_all_metrics(tmp_path):
    cfg = video.Config(batch_size=2, train_length=4, test_sequences=4, eval_batch_size=4)
    setup = video.setup(cfg, RunContext(device=torch.device("cpu"), seed=0, out_dir=tmp_path, cache_dir=tmp_path))
    assert setup.headline == "mse" and setup.higher_is_better is False and "not the official" in setup.dataset
    batch = next(iter(torch.utils.data.DataLoader(setup.train_set, batch_size=2)))
    setup.train_loss(setup.model, batch).backward()
    setup.model.eval()
    with torch.no_grad():
        metrics = setup.evaluate(setup.model)
    assert set(metrics) == {"mse", "mae", "ssim", "psnr"} and metrics["mse"] > 0 and -1 <= metrics["ssim"] <= 1


def test_bad_choices_are_explained(tmp_path):
    context = RunContext(device=torch.device("cpu"), seed=0, out_dir=tmp_path, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="mmnist, mfmnist"):
        video.setup(video.Config(dataset="kth"), context)
    with pytest.raises(ValueError, match="simvp_cpu, simvp_small, simvp_paper"):
        video.setup(video.Config(model="predrnn"), context)


@pytest.mark.slow
def test_sema_smoke_run_through_the_engine(tmp_path):
    cfg, run_dir = compose_run("smoke/video", "sema", 0, str(tmp_path), FAST)
    result = engine.run(cfg, run_dir)
    assert result["status"] == "completed" and result["headline"] == "mse" and result["higher_is_better"] is False
    assert [h["switched"] for h in result["history"]] == [False, True]
    assert set(result["final"]) == {"mse", "mae", "ssim", "psnr"}
    assert any("OpenSTL convention" in note for note in result["notes"])
    assert any("NOT the official test file" in note for note in result["notes"])
