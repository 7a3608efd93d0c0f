"""How the report writes numbers: 4 significant digits, mean ± std over seeds, paired differences with their
interval. Shared by the verdict line (tables.py) and every rendered table (render.py).
"""

from __future__ import annotations

import math
from typing import Optional

from benchmarks.stats import MeanStd, PairedDiff


def number_text(x: Optional[float], signed: bool = False) -> str:
    if x is None or math.isnan(x):
        return ""
    return f"{x:+.4g}" if signed else f"{x:.4g}"


def mean_std_text(stats: MeanStd) -> str:
    if stats.n == 0:
        return ""
    if stats.n == 1:
        return f"{number_text(stats.mean)} (n=1)"
    return f"{number_text(stats.mean)} ± {number_text(stats.std)}"


def diff_text(diff: Optional[PairedDiff]) -> str:
    if diff is None:
        return "n/a (no shared seeds)"
    if diff.ci_low is None:
        return f"{number_text(diff.mean, True)} (n={diff.n})"
    low, high = number_text(diff.ci_low, True), number_text(diff.ci_high, True)
    return f"{number_text(diff.mean, True)} [{low}, {high}] (n={diff.n})"
