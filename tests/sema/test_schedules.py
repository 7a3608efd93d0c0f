"""Decay warm-up values at chosen steps, computed by hand from the formulas in sema.schedules."""

import math

import pytest

from sema.schedules import DecaySchedule


def test_no_warmup_is_constant():
    s = DecaySchedule(0.999, "linear", 0)
    assert [s(t) for t in (0, 1, 10_000)] == [0.999, 0.999, 0.999]
    assert DecaySchedule(0.99, "none", 100)(0) == 0.99


def test_linear_official():
    s = DecaySchedule(0.999, "linear", 100, warmup_ratio=0.9)
    assert s(0) == pytest.approx(0.8991, abs=1e-12)  # 0.9 * 0.999
    assert s(50) == pytest.approx(0.999 * (1 - 0.5 * 0.1), abs=1e-12)  # 0.94905
    assert s(50) == pytest.approx(0.94905, abs=1e-12)
    assert s(99) == pytest.approx(0.999 * (1 - 0.01 * 0.1), abs=1e-12)
    assert s(100) == 0.999 and s(10**6) == 0.999


def test_exp():
    s = DecaySchedule(0.99, "exp", 10, warmup_ratio=0.9)
    assert s(0) == pytest.approx(0.891, abs=1e-12)  # 0.99 * 0.9
    assert s(5) == pytest.approx(0.99 * 0.9**0.5, abs=1e-12)  # 0.99 * 0.948683... = 0.939196...
    assert s(5) == pytest.approx(0.9391965, abs=1e-7)
    assert s(10) == 0.99


def test_power_reaches_decay_at_T_and_explicit_gamma():
    s = DecaySchedule(0.999, "power", 1000, warmup_power=2 / 3)
    assert s(0) == 0.0  # 1 - 1**-p: the first update copies the model, as in timm/ema-pytorch
    gamma = 1000 / (0.001 ** (-1.5) - 1)
    assert s.gamma == pytest.approx(gamma)
    assert s(500) == pytest.approx(1 - (1 + 500 / gamma) ** (-2 / 3), rel=1e-12)
    assert s(999) < 0.999 and s(999) == pytest.approx(0.999, abs=2e-6)
    assert s(1000) == 0.999
    # explicit gamma = 1, power = 2/3 as in ema-pytorch: step 7 -> 1 - 8**(-2/3) = 0.75
    s2 = DecaySchedule(0.999, "power", 10**9, warmup_power=2 / 3, warmup_gamma=1.0)
    assert s2(7) == pytest.approx(0.75, abs=1e-12)
    assert s2(10**7) == 0.999  # capped at decay


def test_mmdet_linear_and_exp():
    mu = 2e-4
    s = DecaySchedule(1 - mu, "mmdet_linear", 100, warmup_ratio=0.9)
    # mu_t = max(mu, (1 - mu)(1 - t/T)(1 - 0.9)), decay_t = 1 - mu_t
    assert s(0) == pytest.approx(1 - (1 - mu) * 0.1, abs=1e-12)  # 0.90002
    assert s(50) == pytest.approx(1 - (1 - mu) * 0.5 * 0.1, abs=1e-12)
    assert s(100) == pytest.approx(1 - mu) and s(5000) == pytest.approx(1 - mu)
    e = DecaySchedule(1 - mu, "mmdet_exp", 2000)
    mu0 = (1 - mu) * math.exp(-1 / 2000) + mu
    assert e(0) == pytest.approx(1 - mu0, abs=1e-15)
    assert e(1999) == pytest.approx((1 - mu) * (1 - math.exp(-1)), abs=1e-12)
