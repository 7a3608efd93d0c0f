"""benchmarks/stats.py against hand computations and scipy."""

import math

import pytest
from scipy import stats as scipy_stats

from benchmarks.stats import first_reach, fraction_targets, mean_std, paired_difference, reaches, t_quantile


def test_mean_std_matches_hand_computation():
    s = mean_std([1.0, 2.0, 3.0, 4.0])
    assert s.n == 4
    assert s.mean == pytest.approx(2.5)
    assert s.std == pytest.approx(math.sqrt(5 / 3))  # sum of squares 5, ddof=1


def test_mean_std_small_samples():
    one = mean_std([0.7])
    assert (one.mean, one.n) == (0.7, 1) and math.isnan(one.std)
    none = mean_std([])
    assert none.n == 0 and math.isnan(none.mean) and math.isnan(none.std)


def test_t_quantile_known_value():
    assert t_quantile(0.975, 2) == pytest.approx(4.302652729911275)


def test_paired_difference_hand_computed_interval():
    a = {0: 3.0, 1: 5.0, 2: 7.0}
    b = {0: 2.0, 1: 3.0, 2: 4.0}  # differences 1, 2, 3: mean 2, sd 1
    d = paired_difference(a, b)
    half = 4.302652729911275 / math.sqrt(3)
    assert (d.mean, d.n) == (pytest.approx(2.0), 3)
    assert d.ci_low == pytest.approx(2.0 - half)
    assert d.ci_high == pytest.approx(2.0 + half)
    assert not d.significant  # the interval [-0.48, 4.48] contains zero


def test_paired_difference_matches_scipy_ttest_rel():
    a = {0: 0.81, 1: 0.84, 2: 0.83, 3: 0.86, 4: 0.85}
    b = {0: 0.80, 1: 0.82, 2: 0.83, 3: 0.83, 4: 0.84, 9: 0.99}  # seed 9 has no partner: ignored
    d = paired_difference(a, b, confidence=0.9)
    seeds = sorted(a)
    ref = scipy_stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).confidence_interval(0.9)
    assert d.n == 5
    assert d.ci_low == pytest.approx(ref.low)
    assert d.ci_high == pytest.approx(ref.high)
    assert d.significant


def test_paired_difference_without_enough_pairs():
    one = paired_difference({0: 1.0, 1: 2.0}, {1: 1.5})
    assert one.n == 1 and one.mean == pytest.approx(0.5)
    assert one.ci_low is None and one.ci_high is None and not one.significant
    assert paired_difference({0: 1.0}, {1: 1.0}) is None
    with pytest.raises(ValueError, match="confidence"):
        paired_difference({0: 1.0}, {0: 1.0}, confidence=95)


def test_reaching_respects_direction():
    assert first_reach([0.5, 0.7, 0.9, 0.95], 0.8, higher_is_better=True) == 2
    assert first_reach([0.5, 0.7], 0.8, higher_is_better=True) is None
    assert first_reach([0.9, 0.4, 0.2], 0.3, higher_is_better=False) == 2
    assert first_reach([math.nan, 0.2], 0.3, higher_is_better=False) == 1
    # A value equal to the target up to float rounding counts as reached.
    assert reaches(0.82, 0.1 + 0.72, higher_is_better=True)
    assert reaches(0.3, 0.1 + 0.2, higher_is_better=False)


def test_fraction_targets_go_part_of_the_way():
    t = fraction_targets(start=0.6, final=0.82, fractions=[0.5, 0.9, 1.0])
    assert t[0.5] == pytest.approx(0.71)
    assert t[0.9] == pytest.approx(0.798)
    assert t[1.0] == 0.82  # exactly the final value
    lower = fraction_targets(start=1.0, final=0.2, fractions=[0.5])  # a lower-is-better metric
    assert lower[0.5] == pytest.approx(0.6)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        fraction_targets(0.0, 1.0, [1.5])
