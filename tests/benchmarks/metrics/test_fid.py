"""Frechet distance against hand computations and a second implementation; the cached proxy extractor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.metrics import fid


def test_frechet_distance_of_diagonal_gaussians_matches_the_closed_form():
    mu1, mu2 = np.array([0.0, 1.0]), np.array([3.0, -1.0])
    s1, s2 = np.diag([4.0, 1.0]), np.diag([1.0, 9.0])
    # |mu1-mu2|^2 = 9 + 4 = 13; trace term = (4 + 1 - 2*2) + (1 + 9 - 2*3) = 1 + 4 = 5
    assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(18.0)


def test_frechet_distance_matches_an_eigenvalue_implementation_on_random_covariances():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    s1, s2 = a @ a.T + np.eye(6), b @ b.T + 0.5 * np.eye(6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    # Tr sqrt(S1 S2) = sum of sqrt of the eigenvalues of S1 S2 (real and positive for SPD S1, S2)
    trace_sqrt = np.sqrt(np.linalg.eigvals(s1 @ s2).real).sum()
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt
    assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_identical_feature_sets_are_at_distance_zero_and_statistics_are_unbiased():
    features = np.random.default_rng(1).normal(size=(200, 5))
    mu, sigma = fid.feature_statistics(features)
    assert np.allclose(mu, features.mean(0)) and np.allclose(sigma, np.cov(features.T, ddof=1))
    assert fid.frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="N >= 2"):
        fid.feature_statistics(features[:1])


def test_proxy_training_is_deterministic_and_cached(tmp_path):
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(256, 1, 16, 16, generator=generator) * 2 - 1
    labels = (images.mean((1, 2, 3)) > 0).long()  # a learnable target
    calls = []

    def make_data():
        calls.append(1)
        return images, labels, False

    first = fid.cached_proxy(tmp_path, "toy", make_data)
    again = fid.train_proxy(images, labels, multilabel=False)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    loaded = fid.cached_proxy(tmp_path, "toy", make_data)
    assert len(calls) == 1 and (tmp_path / "fid_proxy" / f"toy_v{fid.PROXY_VERSION}.pt").is_file()
    assert np.array_equal(fid.proxy_features(first, images), fid.proxy_features(loaded, images))
    assert fid.proxy_features(loaded, images).shape == (256, 128)


def test_configured_but_missing_inception_weights_is_an_error_and_unset_means_proxy(tmp_path, monkeypatch):
    monkeypatch.delenv(fid.INCEPTION_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty hub cache
    assert fid.inception_weights_path(None) is None
    with pytest.raises(FileNotFoundError, match=fid.INCEPTION_FILE):
        fid.inception_weights_path(str(tmp_path))
    monkeypatch.setenv(fid.INCEPTION_ENV, str(tmp_path / "nope.pth"))
    with pytest.raises(FileNotFoundError, match="unset"):
        fid.inception_weights_path(None)


def test_configured_weights_without_torch_fidelity_fail_before_training(tmp_path, monkeypatch):
    weights = tmp_path / fid.INCEPTION_FILE
    weights.write_bytes(b"")
    monkeypatch.setattr(fid.importlib.util, "find_spec", lambda name: None)  # as on a machine without it
    with pytest.raises(ImportError, match="pip install torch-fidelity"):
        fid.inception_weights_path(str(weights))
    # found in the hub cache but unusable without torch-fidelity: the proxy is used
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "torch" / "hub" / "checkpoints" / fid.INCEPTION_FILE).write_bytes(b"")
    monkeypatch.delenv(fid.INCEPTION_ENV, raising=False)
    assert fid.inception_weights_path(None) is None


def test_batchnorm_recalibration_stores_the_exact_mean_and_variance():
    torch.manual_seed(0)
    net = fid.ProxyFeatures(1, 3).eval()
    images = torch.randn(96, 1, 8, 8)
    fid.recalibrate_batchnorm(net, images, batch_size=32)  # three equal batches: mean of means = exact mean
    with torch.no_grad():
        first_conv = net.body[0](images)
    bn = net.body[1]
    assert torch.allclose(bn.running_mean, first_conv.mean((0, 2, 3)), atol=1e-5)
    per_batch_var = torch.stack([first_conv[i : i + 32].var((0, 2, 3)) for i in (0, 32, 64)]).mean(0)
    assert torch.allclose(bn.running_var, per_batch_var, atol=1e-5)  # BN keeps unbiased per-batch variances
    assert bn.momentum == 0.1 and not net.training  # the previous (eval) mode is restored
