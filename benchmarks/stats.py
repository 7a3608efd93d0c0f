"""Statistics for the report: mean +- std over seeds, paired differences with a t interval, epochs-to-target.

Everything here works on plain numbers (dicts keyed by seed, lists of floats), so it is easy to check by hand.
Conventions:

* std is the sample standard deviation (ddof=1); with one value it is undefined and given as NaN.
* A paired difference pairs two methods by seed and reports mean(a - b) with the two-sided Student-t interval
  mean +- t_{(1+c)/2, n-1} * sd / sqrt(n). With fewer than two pairs there is no interval (None).
* "Reaching" a target means value >= target when higher is better, value <= target otherwise, up to a relative
  tolerance of 1e-9 so that a value equal to the target except for float rounding (a mean of seeds) counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Hashable, Mapping, Optional, Sequence


@dataclass(frozen=True)
class MeanStd:
    """Summary of one quantity over seeds."""

    mean: float  # arithmetic mean (NaN when n == 0)
    std: float  # sample standard deviation, ddof=1 (NaN when n < 2)
    n: int  # number of values summarised


@dataclass(frozen=True)
class PairedDiff:
    """mean(a - b) over the seeds both sides share, with its confidence interval."""

    mean: float  # mean of the per-seed differences a - b
    ci_low: Optional[float]  # lower end of the interval; None when n < 2
    ci_high: Optional[float]  # upper end of the interval; None when n < 2
    n: int  # number of seed pairs
    confidence: float  # the interval's confidence level, e.g. 0.95

    @property
    def significant(self) -> bool:
        """True when the interval exists and excludes zero."""
        return self.ci_low is not None and (self.ci_low > 0 or self.ci_high < 0)


def mean_std(values: Sequence[float]) -> MeanStd:
    """Mean and sample std (ddof=1) of `values`; NaN where undefined."""
    n = len(values)
    if n == 0:
        return MeanStd(math.nan, math.nan, 0)
    mean = math.fsum(values) / n
    if n < 2:
        return MeanStd(mean, math.nan, 1)
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return MeanStd(mean, math.sqrt(var), n)


def t_quantile(p: float, dof: int) -> float:
    """The p-quantile of Student's t with `dof` degrees of freedom."""
    from scipy.stats import t  # scipy is heavy; only the report needs it

    return float(t.ppf(p, dof))


def paired_difference(
    a: Mapping[Hashable, float], b: Mapping[Hashable, float], confidence: float = 0.95
) -> Optional[PairedDiff]:
    """Pair `a` and `b` by key (the seed) and summarise a - b; None when they share no key."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    shared = sorted(set(a) & set(b), key=repr)
    if not shared:
        return None
    diffs = [a[k] - b[k] for k in shared]
    summary = mean_std(diffs)
    if summary.n < 2:
        return PairedDiff(summary.mean, None, None, summary.n, confidence)
    half_width = t_quantile((1 + confidence) / 2, summary.n - 1) * summary.std / math.sqrt(summary.n)
    return PairedDiff(
        summary.mean, summary.mean - half_width, summary.mean + half_width, summary.n, confidence
    )


def reaches(value: float, target: float, higher_is_better: bool) -> bool:
    """Whether `value` is at least as good as `target` (within float rounding)."""
    slack = 1e-9 * max(1.0, abs(target))
    return value >= target - slack if higher_is_better else value <= target + slack


def first_reach(values: Sequence[float], target: float, higher_is_better: bool) -> Optional[int]:
    """Index of the first value that reaches `target`, or None when none does (NaNs never reach)."""
    for i, v in enumerate(values):
        if not math.isnan(v) and reaches(v, target, higher_is_better):
            return i
    return None


def fraction_targets(start: float, final: float, fractions: Sequence[float]) -> dict[float, float]:
    """Targets a fraction of the way from `start` to `final`: final - (1 - f) * (final - start), for each f.

    Measuring "of the way" (not f * final) keeps the targets meaningful for lower-is-better metrics and for
    metrics whose scale does not start at zero; f = 1 is `final` itself.
    """
    for f in fractions:
        if not 0 < f <= 1:
            raise ValueError(f"target fractions must be in (0, 1], got {f}")
    return {
        f: final - (1 - f) * (final - start) for f in fractions
    }  # written so that f = 1 gives `final` exactly
