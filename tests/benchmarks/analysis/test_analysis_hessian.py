import math

import pytest
import torch
from torch import nn

from benchmarks.analysis.hessian import (
    hessian_spectrum_ends,
    hessian_vector_product,
    hutchinson_trace,
    loss_and_gradient,
    mean_loss,
    top_hessian_eigenvalue,
)

EIGENVALUES = [10.0, 4.0, 2.0, 1.0, 0.5, 0.25, 0.1, 0.0]


def split_in_two_batches(quadratic, matrix):
    """Two different batches whose mean is `matrix`: checks that the analysis averages over batches."""
    noise = quadratic.symmetric([1.0] * matrix.shape[0], seed=7) * 3.0
    return [matrix + noise, matrix - noise]


def test_loss_gradient_and_hvp_match_the_closed_form(quadratic):
    matrix = quadratic.symmetric(EIGENVALUES)
    x = torch.linspace(-1, 1, 8, dtype=torch.float64)
    model, batches = quadratic.Point(x), split_in_two_batches(quadratic, matrix)
    assert mean_loss(model, quadratic.loss, batches) == pytest.approx(float(0.5 * x @ matrix @ x), rel=1e-12)
    loss, (grad,) = loss_and_gradient(model, quadratic.loss, batches, [model.x])
    torch.testing.assert_close(grad, matrix @ x)
    v = torch.arange(8, dtype=torch.float64)
    (hv,) = hessian_vector_product(model, quadratic.loss, batches, [model.x], [v])
    torch.testing.assert_close(hv, matrix @ v)


def test_power_iteration_finds_the_exact_top_eigenvalue(quadratic):
    matrix = quadratic.symmetric(EIGENVALUES)
    model = quadratic.Point(torch.ones(8))
    result = top_hessian_eigenvalue(
        model, quadratic.loss, split_in_two_batches(quadratic, matrix), iterations=200, tolerance=1e-10
    )
    assert result.converged
    assert result.eigenvalue == pytest.approx(10.0, rel=1e-6)
    assert result.iterations == len(result.history)


def test_power_iteration_returns_the_largest_magnitude_even_if_negative(quadratic):
    matrix = quadratic.symmetric([-6.0, 3.0, 1.0])
    point = quadratic.Point(torch.zeros(3))
    result = top_hessian_eigenvalue(point, quadratic.loss, [matrix], iterations=300, tolerance=1e-12)
    assert result.eigenvalue == pytest.approx(-6.0, rel=1e-6)


def test_power_iteration_is_seeded(quadratic):
    matrix = quadratic.symmetric(EIGENVALUES)
    first = top_hessian_eigenvalue(quadratic.Point(torch.ones(8)), quadratic.loss, [matrix], iterations=3, seed=5)
    second = top_hessian_eigenvalue(quadratic.Point(torch.ones(8)), quadratic.loss, [matrix], iterations=3, seed=5)
    assert first.history == second.history


def test_lanczos_finds_both_ends_where_power_iteration_alternates(quadratic):
    # Indefinite, ends of similar size: power iteration (rate 5/6) is still far off after 20 products, Lanczos
    # has both ends exactly. Weights short of a minimum look like this (the quick regression runs).
    eigenvalues = [-5.0, 6.0, 3.0, 2.0, 1.0, 0.5, -0.5, -1.0, 0.25, 0.0, 0.1, -0.1]
    matrix = quadratic.symmetric(eigenvalues, seed=2)
    batches = split_in_two_batches(quadratic, matrix)
    ends = hessian_spectrum_ends(quadratic.Point(torch.ones(12)), quadratic.loss, batches, tolerance=1e-10)
    assert ends.converged and ends.products <= 30  # one basis of 12 vectors suffices: the space is 12-dimensional
    assert ends.top == pytest.approx(6.0, rel=1e-8) and ends.bottom == pytest.approx(-5.0, rel=1e-8)
    power = top_hessian_eigenvalue(quadratic.Point(torch.ones(12)), quadratic.loss, batches, iterations=20)
    assert not power.converged
    assert abs(power.eigenvalue - 6.0) > 1e-3 * 6.0


def test_lanczos_matches_the_dense_spectrum_of_a_small_network():
    # Second implementation: the dense Hessian of a tiny MLP (torch.autograd.functional.hessian) and eigvalsh.
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)).double()
    inputs, targets = torch.randn(32, 4, dtype=torch.float64), torch.randn(32, 2, dtype=torch.float64)

    def loss_fn(model, batch):
        return nn.functional.mse_loss(model(batch[0]), batch[1])

    names = [name for name, _ in net.named_parameters()]
    shapes = [p.shape for p in net.parameters()]
    flat = torch.cat([p.detach().flatten() for p in net.parameters()])

    def flat_loss(vector):
        state = dict(zip(names, (piece.view(shape) for piece, shape in
                                 zip(vector.split([math.prod(s) for s in shapes]), shapes))))
        return nn.functional.mse_loss(torch.func.functional_call(net, state, (inputs,)), targets)

    dense = torch.linalg.eigvalsh(torch.autograd.functional.hessian(flat_loss, flat))
    assert dense[0] < 0 < dense[-1]  # random weights: a saddle, as the test intends
    ends = hessian_spectrum_ends(net, loss_fn, [(inputs, targets)], max_products=2000, tolerance=1e-10, seed=3)
    assert ends.converged
    assert ends.top == pytest.approx(float(dense[-1]), rel=1e-6)
    assert ends.bottom == pytest.approx(float(dense[0]), rel=1e-6)


def test_lanczos_is_seeded_and_handles_the_tiny_cases(quadratic):
    matrix = quadratic.symmetric(EIGENVALUES, seed=4)
    runs = [hessian_spectrum_ends(quadratic.Point(torch.ones(8)), quadratic.loss, [matrix], seed=9) for _ in "ab"]
    assert runs[0] == runs[1]
    two = torch.tensor([[2.0, 1.0], [1.0, -3.0]], dtype=torch.float64)  # eigenvalues -0.5 +- sqrt(7.25)
    ends = hessian_spectrum_ends(quadratic.Point(torch.zeros(2)), quadratic.loss, [two])
    assert (ends.top, ends.bottom) == (pytest.approx(-0.5 + 7.25**0.5), pytest.approx(-0.5 - 7.25**0.5))
    with pytest.raises(ValueError, match="max_products must be >= 1"):
        hessian_spectrum_ends(quadratic.Point(torch.zeros(2)), quadratic.loss, [two], max_products=0)


def test_hutchinson_is_exact_for_a_diagonal_hessian(quadratic):
    # z^T D z = sum_i D_ii z_i^2 = tr(D) for every Rademacher z: the estimator is unbiased with zero variance.
    diagonal = torch.diag(torch.tensor([3.0, -1.0, 0.5, 7.0], dtype=torch.float64))
    result = hutchinson_trace(quadratic.Point(torch.zeros(4)), quadratic.loss, [diagonal], probes=3)
    assert result.trace == pytest.approx(9.5, abs=1e-12)
    assert result.standard_error == pytest.approx(0.0, abs=1e-12)


def test_hutchinson_is_within_its_standard_deviation_for_a_dense_hessian(quadratic):
    matrix = quadratic.symmetric(EIGENVALUES, seed=3)
    probes = 400
    result = hutchinson_trace(quadratic.Point(torch.zeros(8)), quadratic.loss, [matrix], probes=probes, seed=1)
    # Var(z^T A z) = 2 * sum_{i != j} A_ij^2 for Rademacher z.
    off_diagonal = (matrix**2).sum() - (torch.diagonal(matrix) ** 2).sum()
    std_of_mean = math.sqrt(2 * float(off_diagonal) / probes)
    assert abs(result.trace - sum(EIGENVALUES)) < 4 * std_of_mean
    assert result.standard_error == pytest.approx(std_of_mean, rel=0.25)


def test_hessian_of_a_small_network_matches_the_dense_hessian(quadratic):
    # Second implementation: torch.autograd.functional.hessian on the flattened weights of a tiny MLP.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    inputs, targets = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 1, dtype=torch.float64)
    batches = [(inputs[:8], targets[:8]), (inputs[8:], targets[8:])]

    def loss_fn(model, batch):
        return nn.functional.mse_loss(model(batch[0]), batch[1])

    params = list(net.parameters())
    shapes = [p.shape for p in params]
    flat = torch.cat([p.detach().flatten() for p in params])

    def flat_loss(vector):
        pieces, start = [], 0
        for shape in shapes:
            pieces.append(vector[start : start + math.prod(shape)].view(shape))
            start += math.prod(shape)
        names = [name for name, _ in net.named_parameters()]
        state = dict(zip(names, pieces))
        losses = [
            nn.functional.mse_loss(torch.func.functional_call(net, state, (x,)), y) for x, y in batches
        ]
        return sum(losses) / len(losses)

    dense = torch.autograd.functional.hessian(flat_loss, flat)
    eigenvalues = torch.linalg.eigvalsh(dense)
    top = eigenvalues[eigenvalues.abs().argmax()]
    result = top_hessian_eigenvalue(net, loss_fn, batches, iterations=500, tolerance=1e-12)
    assert result.eigenvalue == pytest.approx(float(top), rel=1e-5)
    trace = hutchinson_trace(net, loss_fn, batches, probes=300, seed=0)
    assert abs(trace.trace - float(torch.trace(dense))) < 4 * trace.standard_error + 1e-9


def test_bad_arguments_raise_clear_errors(quadratic):
    with pytest.raises(ValueError, match="at least one batch"):
        mean_loss(quadratic.Point(torch.zeros(2)), quadratic.loss, [])
    with pytest.raises(ValueError, match="probes must be >= 1"):
        hutchinson_trace(quadratic.Point(torch.zeros(2)), quadratic.loss, [torch.eye(2)], probes=0)
    with pytest.raises(ValueError, match="no trainable parameters"):
        top_hessian_eigenvalue(nn.Identity(), quadratic.loss, [torch.eye(2)])
