import math

import pytest
import torch

from benchmarks.analysis.sharpness import epsilon_sharpness


@pytest.mark.parametrize("rho", [0.05, 0.5])
def test_sharpness_at_the_minimum_of_a_quadratic_is_half_rho_squared_lambda_max(quadratic, rho):
    matrix = quadratic.symmetric([6.0, 2.0, 1.0, 0.5, 0.1])
    model = quadratic.Point(torch.zeros(5))
    result = epsilon_sharpness(model, quadratic.loss, [matrix], rho=rho, steps=40)
    assert result.base_loss == 0.0
    assert result.increase == pytest.approx(rho**2 * 6.0 / 2, rel=1e-3)
    assert result.perturbed_loss == pytest.approx(result.increase)
    assert len(result.history) == 41


def test_sharpness_away_from_the_minimum_matches_a_brute_force_search(quadratic):
    # A convex function attains its maximum over a ball on the sphere: search the circle densely in 2-D.
    matrix = torch.tensor([[3.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
    x0 = torch.tensor([1.0, -0.5], dtype=torch.float64)
    rho = 0.3
    angles = torch.linspace(0, 2 * math.pi, 100_001, dtype=torch.float64)
    points = x0 + rho * torch.stack([angles.cos(), angles.sin()], dim=1)
    losses = 0.5 * ((points @ matrix) * points).sum(dim=1)
    expected = float(losses.max() - 0.5 * x0 @ matrix @ x0)
    result = epsilon_sharpness(quadratic.Point(x0), quadratic.loss, [matrix], rho=rho, steps=30)
    assert result.increase == pytest.approx(expected, rel=1e-6)


def test_sharpness_restores_the_weights_and_is_seeded(quadratic):
    matrix = quadratic.symmetric([3.0, 1.0, 0.2])
    model = quadratic.Point(torch.tensor([0.3, -0.2, 0.1]))
    before = model.x.detach().clone()
    first = epsilon_sharpness(model, quadratic.loss, [matrix], rho=0.1, steps=2, seed=4)
    torch.testing.assert_close(model.x.detach(), before, rtol=0, atol=0)
    second = epsilon_sharpness(model, quadratic.loss, [matrix], rho=0.1, steps=2, seed=4)
    assert first.history == second.history


def test_every_iterate_stays_in_the_ball(quadratic):
    # On a linear loss g.x the largest increase within the ball is exactly rho * ||g||, reached on the sphere.
    gradient = torch.tensor([3.0, -4.0], dtype=torch.float64)
    model = quadratic.Point(torch.zeros(2))
    result = epsilon_sharpness(model, lambda m, g: g @ m.x, [gradient], rho=0.2, steps=30)
    assert result.increase == pytest.approx(0.2 * 5.0, rel=1e-9)
    assert max(result.history) <= 0.2 * 5.0 + 1e-12


def test_bad_rho_is_rejected(quadratic):
    with pytest.raises(ValueError, match="rho must be > 0"):
        epsilon_sharpness(quadratic.Point(torch.zeros(2)), quadratic.loss, [torch.eye(2)], rho=0.0)
