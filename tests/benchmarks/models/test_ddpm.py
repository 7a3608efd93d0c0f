"""DDPM schedule, forward process and sampler against DDPM's formulas written out by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from benchmarks.models.ddpm import Diffusion


class ConstantEps(nn.Module):
    """A 'network' predicting eps = c * x_t, so every sampler step has a hand-computable result."""

    def __init__(self, c: float):
        super().__init__()
        self.c = nn.Parameter(torch.tensor(c, dtype=torch.float64))

    def forward(self, x, t):
        return self.c * x


def test_linear_schedule_and_alpha_bar():
    d = Diffusion(timesteps=4, beta_start=0.1, beta_end=0.4)
    assert torch.allclose(d.betas, torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64))
    assert d.alpha_bars[-1].item() == pytest.approx(0.9 * 0.8 * 0.7 * 0.6)
    with pytest.raises(ValueError, match="beta_start < beta_end"):
        Diffusion(10, 0.02, 0.01)


def test_q_sample_and_loss_follow_the_closed_form():
    d = Diffusion(timesteps=10, beta_start=0.01, beta_end=0.2)
    x0, noise = torch.full((2, 1, 2, 2), 0.5), torch.full((2, 1, 2, 2), -1.0)
    t = torch.tensor([0, 9])
    xt = d.q_sample(x0, t, noise)
    for i, step in enumerate(t.tolist()):
        a = d.alpha_bars[step].item()
        assert torch.allclose(xt[i], torch.full((1, 2, 2), math.sqrt(a) * 0.5 - math.sqrt(1 - a)))
    model = ConstantEps(0.0).float()
    assert d.loss(model, x0, t, noise).item() == pytest.approx(1.0)  # predicting 0 for noise of -1


def test_full_length_sampler_with_eta_one_is_ddpm_ancestral_sampling():
    d = Diffusion(timesteps=6, beta_start=0.05, beta_end=0.3)
    model = ConstantEps(0.3)
    shape = (3, 1, 2, 2)
    got = d.sample(model, shape, torch.Generator().manual_seed(7), steps=6, eta=1.0).double()

    # DDPM (Ho et al. eq. 6-7) with x0 clipped to [-1, 1]: posterior mean and variance beta_tilde.
    g = torch.Generator().manual_seed(7)
    x = torch.randn(shape, generator=g).double()
    betas, abar = d.betas, d.alpha_bars
    for t in range(5, -1, -1):
        a_t, a_prev = abar[t], (abar[t - 1] if t > 0 else torch.tensor(1.0, dtype=torch.float64))
        eps = 0.3 * x
        x0 = ((x - (1 - a_t).sqrt() * eps) / a_t.sqrt()).clamp(-1, 1)
        mean = (a_prev.sqrt() * betas[t] / (1 - a_t)) * x0 + (
            (1 - betas[t]).sqrt() * (1 - a_prev) / (1 - a_t)
        ) * x
        x = mean
        if t > 0:
            x = x + ((1 - a_prev) / (1 - a_t) * betas[t]).sqrt() * torch.randn(shape, generator=g).double()
    assert torch.allclose(got, x, atol=1e-5)


def test_sampling_is_reproducible_from_the_seed_and_checks_steps():
    d = Diffusion(timesteps=50)
    model = ConstantEps(0.1).float()
    a = d.sample(model, (2, 1, 4, 4), torch.Generator().manual_seed(3), steps=5)
    b = d.sample(model, (2, 1, 4, 4), torch.Generator().manual_seed(3), steps=5)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match=r"\[1, 50\]"):
        d.sample(model, (1, 1, 4, 4), torch.Generator(), steps=51)
