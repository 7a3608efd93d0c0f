import pytest
import torch
from torch import nn

from benchmarks.analysis.landscape import (
    filter_normalized_direction,
    interpolate_states,
    interpolation_curve,
    landscape_1d,
    landscape_2d,
    plot_curves,
    plot_surface,
)


def distance_to_three(model, batch):
    """(w - 3)^2 for the single weight of a 1x1 linear layer; the batch is unused."""
    return (model.weight.squeeze() - 3.0) ** 2


def test_interpolation_follows_the_known_function_and_restores_weights():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(-7.0)
    start, end = {"weight": torch.tensor([[1.0]])}, {"weight": torch.tensor([[5.0]])}
    alphas = [-0.5, 0.0, 0.25, 0.5, 1.0, 1.5]
    curve = interpolation_curve(
        model, model, distance_to_three, [None], start, end, alphas, metric_fn=lambda m: float(m.weight.detach())
    )
    # w(a) = 1 + 4a, so the loss is (4a - 2)^2 and the metric is w(a) itself.
    assert curve["alpha"] == alphas
    assert curve["loss"] == pytest.approx([(4 * a - 2) ** 2 for a in alphas])
    assert curve["metric"] == pytest.approx([1 + 4 * a for a in alphas])
    assert float(model.weight.detach()) == -7.0


def test_interpolation_mixes_batchnorm_statistics_and_keeps_integer_counters():
    first, second = nn.BatchNorm1d(2), nn.BatchNorm1d(2)
    with torch.no_grad():
        second.running_mean.fill_(4.0)
        second.running_var.fill_(3.0)
        second.weight.fill_(2.0)
    second.num_batches_tracked.fill_(9)
    mixed = interpolate_states(first.state_dict(), second.state_dict(), 0.25)
    torch.testing.assert_close(mixed["running_mean"], torch.full((2,), 1.0))
    torch.testing.assert_close(mixed["running_var"], torch.full((2,), 1.5))
    torch.testing.assert_close(mixed["weight"], torch.full((2,), 1.25))
    assert int(mixed["num_batches_tracked"]) == 0


def test_interpolation_rejects_mismatched_states():
    with pytest.raises(ValueError, match="different keys"):
        interpolate_states({"a": torch.zeros(1)}, {"b": torch.zeros(1)}, 0.5)
    with pytest.raises(ValueError, match="shape"):
        interpolate_states({"a": torch.zeros(1)}, {"a": torch.zeros(2)}, 0.5)


def test_filter_normalised_direction_has_the_weights_filter_norms():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 5))
    params = list(net.parameters())
    direction = filter_normalized_direction(params, seed=11)
    conv_weight, conv_bias, bn_weight, bn_bias, linear_weight, linear_bias = zip(params, direction)
    for weight, d in (conv_weight, linear_weight):
        torch.testing.assert_close(d.flatten(1).norm(dim=1), weight.detach().flatten(1).norm(dim=1))
        assert d.shape == weight.shape
    for _, d in (conv_bias, bn_weight, bn_bias, linear_bias):
        assert torch.count_nonzero(d) == 0  # biases and norm layers: zero direction (Li et al.'s "ignore biasbn")
    again = filter_normalized_direction(params, seed=11)
    assert all(torch.equal(a, b) for a, b in zip(direction, again))
    other = filter_normalized_direction(params, seed=12)
    assert not torch.equal(direction[0], other[0])


def test_landscapes_on_a_quadratic_match_the_closed_form(quadratic):
    matrix = quadratic.symmetric([2.0, 1.0, 0.5])
    x0 = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)
    model = quadratic.Point(x0)
    dx = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    dy = torch.tensor([0.0, 1.0, -1.0], dtype=torch.float64)
    coords = [-1.0, -0.5, 0.0, 0.5, 1.0]

    def f(x):
        return float(0.5 * x @ matrix @ x)

    line = landscape_1d(model, quadratic.loss, [matrix], [dx], coords)
    assert line["loss"] == pytest.approx([f(x0 + t * dx) for t in coords])
    surface = landscape_2d(model, quadratic.loss, [matrix], [dx], [dy], coords)
    for i, y in enumerate(coords):
        assert surface["loss"][i] == pytest.approx([f(x0 + x * dx + y * dy) for x in coords])
    torch.testing.assert_close(model.x.detach(), x0, rtol=0, atol=0)


def test_plots_are_png_files(tmp_path):
    line = plot_curves(tmp_path / "a" / "line.png", {"x": ([0, 1, 2], [1.0, 0.5, 2.0])}, "alpha", "loss", "t")
    surface = plot_surface(tmp_path / "surface.png", [-1, 0, 1], [[3, 2, 3], [2, 1, 2], [3, 2, float("inf")]], "t")
    for path in (line, surface):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
