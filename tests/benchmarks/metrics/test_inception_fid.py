"""The standard-FID path without the real Inception weights (never downloaded, not shipped).

The tests save torch-fidelity's own Inception-v3 architecture with random weights under the real file name and
run `inception_fid` on it: what is checked is that the configured file is what gets loaded, that the FID of
torchmetrics equals the project's `frechet_distance` on the same network's 2048-d features, and the basic
properties of a distance. Numbers are not those of the real network.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from benchmarks.metrics import fid

N_IMAGES = 5  # Inception at 299x299 costs ~0.2 s per image on one CPU thread


def save_random_inception(folder, seed: int):
    """torch-fidelity's FeatureExtractorInceptionV3, He-initialised convolutions, saved as INCEPTION_FILE."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class Unloaded(FeatureExtractorInceptionV3):
        """The constructor insists on loading weights; this one accepts the empty placeholder below."""

        def load_state_dict(self, state_dict, strict=True):
            if state_dict != {}:
                return super().load_state_dict(state_dict, strict)

    folder.mkdir(parents=True, exist_ok=True)
    placeholder = folder / "placeholder.pth"
    torch.save({}, placeholder)
    net = Unloaded("random-inception", ["2048"], feature_extractor_weights_path=str(placeholder))
    generator = torch.Generator().manual_seed(seed)
    for module in net.modules():  # He init keeps activations O(1) through the 90-odd layers
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            fan_in = module.weight[0].numel()
            module.weight.data = torch.randn(module.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5
    path = folder / fid.INCEPTION_FILE
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    """Two weight files of the same architecture (seeds 1, 2), each in its own folder under the real name."""
    root = tmp_path_factory.mktemp("inception")
    return save_random_inception(root / "first", seed=1), save_random_inception(root / "second", seed=2)


def image_sets():
    generator = torch.Generator().manual_seed(0)
    real = torch.rand(N_IMAGES, 3, 32, 32, generator=generator) * 2 - 1
    fake = (torch.rand(N_IMAGES, 3, 32, 32, generator=generator) * 1.2 - 0.8).clamp(-1, 1)  # darker, narrower
    return real, fake


def test_uint8_conversion_rounds_back_the_bytes_of_8_bit_images():
    levels = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    images = levels.float() / 127.5 - 1  # as the loaders scale 8-bit files
    back = fid.to_uint8_rgb(images)
    assert back.shape == (1, 3, 16, 16) and back.dtype == torch.uint8
    assert torch.equal(back, levels.repeat(1, 3, 1, 1))  # truncation would turn some levels into level - 1


def test_frechet_distance_matches_scipy_sqrtm_when_covariances_are_rank_deficient():
    import numpy as np
    from scipy import linalg

    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=(10, 40)), rng.normal(loc=0.3, size=(12, 40)) * 1.5  # fewer samples than dims
    (mu1, s1), (mu2, s2) = fid.feature_statistics(x1), fid.feature_statistics(x2)
    trace_sqrt = np.trace(linalg.sqrtm(s1 @ s2).real)  # the pytorch-fid route
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt
    assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6)
    # zero up to the square roots of round-off in the null space
    assert fid.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-6 * np.trace(s1))


@pytest.mark.slow
def test_standard_fid_loads_the_configured_file_and_matches_frechet_distance_on_its_features(
    tmp_path, monkeypatch, weight_files
):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty hub cache: nothing to fall back on
    first, second = weight_files
    monkeypatch.setenv(fid.INCEPTION_ENV, str(first.parent))  # a folder holding the file under its real name
    assert fid.inception_weights_path(None) == first
    real, fake = image_sets()

    value = fid.inception_fid(real, fake, first)
    # parity: torch-fidelity's own extractor on the same file and bytes, then the project's Frechet distance
    extractor = FeatureExtractorInceptionV3(
        "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(first)
    )
    with torch.no_grad():
        features = [extractor(fid.to_uint8_rgb(x))[0].double().numpy() for x in (real, fake)]
    assert features[0].shape == (N_IMAGES, 2048) and features[0].std() > 1e-3  # not a dead network
    stats_real, stats_fake = fid.feature_statistics(features[0]), fid.feature_statistics(features[1])
    expected = fid.frechet_distance(*stats_real, *stats_fake)
    assert value == pytest.approx(expected, rel=1e-4)
    assert value > 0

    other = fid.inception_fid(real, fake, second)  # other weights in the file: another network, another FID
    assert abs(other - value) > 1e-3 * value
    assert not (tmp_path / "torch" / "hub" / "checkpoints").exists()  # nothing was downloaded into the hub


@pytest.mark.slow
def test_standard_fid_is_symmetric_and_zero_between_a_set_and_itself(tmp_path, monkeypatch, weight_files):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    real, fake = image_sets()
    value = fid.inception_fid(real, fake, weight_files[0])
    assert value > 0
    assert fid.inception_fid(fake, real, weight_files[0]) == pytest.approx(value, rel=1e-4)
    assert abs(fid.inception_fid(real, real, weight_files[0])) < 1e-3 * value


@pytest.mark.slow
def test_generation_reports_standard_fid_when_the_weights_are_configured(tmp_path, monkeypatch, weight_files):
    from benchmarks import engine
    from benchmarks.recipes import compose_run

    monkeypatch.setenv("SEMA_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv(fid.INCEPTION_ENV, str(weight_files[0]))
    overrides = ["logger.wandb.mode=disabled", "trainer.num_threads=1", "task.fid_samples=4",
                 "task.fid_real_samples=4", "task.grid_size=2"]
    cfg, run_dir = compose_run("smoke/generation", "baseline", 0, str(tmp_path / "runs"), overrides)
    engine.run(cfg, run_dir)
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "completed", result["error"]
    assert set(result["final"]) == {"denoise_loss", "fid"} and result["final"]["fid"] > 0
    assert any(note.startswith("FID with the standard Inception network") for note in result["notes"])
    assert not (tmp_path / "cache" / "fid_proxy").exists()  # the proxy was neither trained nor used


def test_configured_but_missing_weights_say_where_they_were_expected(tmp_path, monkeypatch):
    monkeypatch.delenv(fid.INCEPTION_ENV, raising=False)
    expected = str(tmp_path / fid.INCEPTION_FILE)
    message = f"not found at {expected}.*inception_weights.*{fid.INCEPTION_ENV}"
    with pytest.raises(FileNotFoundError, match=message):
        fid.inception_weights_path(str(tmp_path))  # a folder without the file
    with pytest.raises(FileNotFoundError, match="Inception weights not found"):
        fid.inception_fid(torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8), tmp_path / "absent.pth")
