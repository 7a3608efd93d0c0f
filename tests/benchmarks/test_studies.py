"""benchmarks/studies.py: which runs a study makes (the baseline shared by the points that only change the
averaging), and the plain-words conclusion written from paired intervals."""

from __future__ import annotations

from benchmarks.stats import PairedDiff
from benchmarks.studies import STUDIES, conclusion, runs_of


def test_the_horizon_study_trains_one_baseline_per_seed_and_each_average_on_its_own_settings(tmp_path):
    plan = runs_of(STUDIES["horizon"], [0], str(tmp_path))
    dirs = {(cfg.method.name, str(d)) for _, _, members in plan for cfg, d in members}
    baselines = {d for m, d in dirs if m == "baseline"}
    assert len(baselines) == 1  # decay and switch cadence do not touch the baseline: one run serves all 12 points
    semas = {d for m, d in dirs if m == "sema"}
    assert len(semas) == 9 and any("averaging.decay=0.9,method.switch_every=4" in d for d in semas)
    assert len({d for m, d in dirs if m == "ema"}) == 3


def test_the_conclusion_names_where_a_method_is_better_worse_or_indistinguishable():
    findings = [("8 epochs", "sema", PairedDiff(-4.9, -7.5, -2.3, 3, 0.95)),
                ("128 epochs", "sema", PairedDiff(0.4, -0.2, 1.0, 3, 0.95)),
                ("8 epochs", "ema", PairedDiff(0.5, 0.1, 0.9, 3, 0.95))]
    assert conclusion(findings, higher_is_better=True) == (
        "SEMA is significantly worse than the baseline at 8 epochs; not distinguishable from the baseline (the "
        "interval includes 0, or n < 2) at 128 epochs; its difference goes from -4.9 (8 epochs) to +0.4 (128 "
        "epochs). EMA is significantly better than the baseline at 8 epochs.")
    # lower is better (e.g. a loss): the same negative difference is an improvement
    assert conclusion(findings[:1], higher_is_better=False).startswith("SEMA is significantly better")
    assert conclusion([], True) == "No finished runs yet."
