"""Power (Karras) EMA: the recursion equals its closed form; sigma_rel <-> gamma; hand-computed cases."""

import math

import pytest
import torch

import sema
from sema.power_ema import SIGMA_REL_MAX, gamma_from_sigma_rel, sigma_rel_from_gamma


def _scalar_model(value: float = 0.0) -> torch.nn.Linear:
    lin = torch.nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        lin.weight.fill_(value)
    return lin


def _set(lin, value):
    with torch.no_grad():
        lin.weight.fill_(value)


@pytest.mark.parametrize("gamma,values,expected", [
    (0.0, [1.0, 2.0, 3.0], 2.0),  # gamma = 0: the uniform mean
    (1.0, [1.0, 3.0], 2.5),  # w = (2i - 1) / t^2 = 1/4, 3/4
    (2.0, [2.0, 0.0, 9.0], (1 * 2.0 + 7 * 0.0 + 19 * 9.0) / 27),  # w = (i^3 - (i-1)^3) / 27 = 1, 7, 19 (/27)
])
def test_hand_computed(gamma, values, expected):
    lin = _scalar_model(123.0)  # the weights at binding never count: decay_1 = 0
    avg = sema.PowerEMA(lin, gamma=gamma, average_dtype=torch.float64)
    for v in values:
        _set(lin, v)
        avg.update()
    assert avg.average.weight.item() == pytest.approx(expected, rel=1e-14)


def test_recursion_equals_closed_form_on_random_trajectory():
    torch.manual_seed(0)
    gamma, steps = 6.94, 40
    lin = torch.nn.Linear(5, 3).double()
    avg = sema.PowerEMA(lin, gamma=gamma, average_dtype=torch.float64)
    seen = []
    for _ in range(steps):
        with torch.no_grad():
            for p in lin.parameters():
                p.add_(torch.randn_like(p))
        seen.append({k: v.detach().clone() for k, v in lin.named_parameters()})
        avg.update()
    t = steps
    weights = [(i ** (gamma + 1) - (i - 1) ** (gamma + 1)) / t ** (gamma + 1) for i in range(1, t + 1)]
    assert sum(weights) == pytest.approx(1.0, abs=1e-12)
    for name, mine in avg.average.named_parameters():
        closed = sum(w * s[name] for w, s in zip(weights, seen))
        torch.testing.assert_close(mine, closed, rtol=1e-12, atol=1e-12)


def test_update_every_counts_averaging_updates():
    lin = _scalar_model()
    avg = sema.PowerEMA(lin, gamma=0.0, update_every=2, average_dtype=torch.float64)
    for call, v in enumerate([5.0, 1.0, 7.0, 3.0], start=1):  # averaged at calls 2 and 4: values 1 and 3
        _set(lin, v)
        avg.update()
    assert (avg.step, avg.updates) == (4, 2)
    assert avg.average.weight.item() == 2.0
    assert avg.decay_at(2) == 0.5 and avg.decay_at(1) == 0.0


def test_sigma_rel_gamma_conversion():
    # EDM2's two training-time profiles
    assert gamma_from_sigma_rel(0.10) == pytest.approx(6.94, abs=0.01)
    assert gamma_from_sigma_rel(0.05) == pytest.approx(16.97, abs=0.01)
    for s in (0.01, 0.05, 0.1, 0.2, SIGMA_REL_MAX):
        assert sigma_rel_from_gamma(gamma_from_sigma_rel(s)) == pytest.approx(s, rel=1e-12)
    assert sigma_rel_from_gamma(0.0) == pytest.approx(1 / math.sqrt(12))
    assert sema.PowerEMA(torch.nn.Linear(1, 1)).gamma == pytest.approx(gamma_from_sigma_rel(0.10))
    assert sema.PowerEMA(torch.nn.Linear(1, 1), sigma_rel=0.05).sigma_rel == pytest.approx(0.05)


def test_conversion_matches_ema_pytorch():
    post_hoc = pytest.importorskip("ema_pytorch.post_hoc_ema")
    for s in (0.03, 0.05, 0.1, 0.15, 0.25):  # independent: numpy's cubic roots
        assert gamma_from_sigma_rel(s) == pytest.approx(post_hoc.sigma_rel_to_gamma(s), rel=1e-9)


@pytest.mark.parametrize("kwargs,message", [
    (dict(gamma=-0.5), r"gamma=-0.5 must be a finite number >= 0"),
    (dict(sigma_rel=0.3), r"sigma_rel=0.3 is outside the allowed range \(0, 0.288675\]"),
    (dict(gamma=1.0, sigma_rel=0.1), r"give gamma or sigma_rel, not both"),
    (dict(update_every=0), r"update_every=0 must be an integer >= 1"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sema.PowerEMA(torch.nn.Linear(1, 1), **kwargs)
