"""benchmarks/studies.py: which runs a study makes (the baseline shared by the points that only change the
averaging), and the plain-words conclusion written from paired intervals."""

from __future__ import annotations

import json

from benchmarks.stats import PairedDiff
from benchmarks.studies import STUDIES, conclusion, runs_of, statistic_section, work_units


def test_the_horizon_study_trains_one_baseline_per_seed_and_each_average_on_its_own_settings(tmp_path):
    plan = runs_of(STUDIES["horizon"], [0], str(tmp_path))
    dirs = {(cfg.method.name, str(d)) for _, _, members in plan for cfg, d in members}
    baselines = {d for m, d in dirs if m == "baseline"}
    assert len(baselines) == 1  # decay and switch cadence do not touch the baseline: one run serves all 12 points
    semas = {d for m, d in dirs if m == "sema"}
    assert len(semas) == 9 and any(d.endswith("method.decay=0.9,method.switch_every=4") for d in semas)
    assert len({d for m, d in dirs if m == "ema"}) == 3
    assert not any("averaging." in d for _, d in dirs)  # the decay is the method's: the baseline shares its run
    units = work_units(STUDIES["horizon"], [0], str(tmp_path))
    # a trajectory carries each method once: baseline + the first EMA, then the other two EMAs on their own
    assert [sorted(c.method.name for c, _ in passive) for _, passive, _ in units] == [
        ["baseline", "ema"], ["ema"], ["ema"]]
    assert sorted(c.method.decay for _, passive, _ in units for c, _ in passive if c.method.name == "ema") == [
        0.9, 0.99, 0.999]
    assert sum(len(active) for _, _, active in units) == 9  # the SEMA variants train on their own


def test_a_study_that_changes_the_training_shares_a_trajectory_per_point_only(tmp_path):
    units = work_units(STUDIES["length"], [0], str(tmp_path))
    assert len(units) == 5  # one per run length: baseline + EMA ride together, SEMA alone
    assert all(sorted(c.method.name for c, _ in p) == ["baseline", "ema"] and len(a) == 1 for _, p, a in units)


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


def test_the_statistic_section_says_when_the_reported_statistic_changes_the_verdict(tmp_path):
    # SEMA is 2 points behind at the last evaluation (seeds differ by 0.1: significant), level at the best one.
    for seed, (base, sema_final) in enumerate([(80.0, 78.0), (81.0, 78.9), (79.0, 77.1)]):
        for method, final, best in (("baseline", base, base), ("sema", sema_final, base + 0.05 * (seed - 1))):
            run = tmp_path / method / f"seed{seed}"
            run.mkdir(parents=True)
            (run / "result.json").write_text(json.dumps({
                "status": "completed", "method": method, "seed": seed, "task": "classification",
                "headline": "top1", "higher_is_better": True, "config": {"task": {"model": "tiny_cnn"}},
                "final": {"top1": final}, "best": {"top1": best}, "median_last": {"top1": final}}))
    text = statistic_section(tmp_path, methods=("sema",))
    assert "| classification (tiny_cnn) | sema | -2 [" in text
    assert ("The statistic changes the verdict (significantly better / worse / tie at 95%) for: sema on "
            "classification (final: worse, best: tie, median_last: worse).") in text


def test_a_study_run_side_by_side_gives_the_runs_of_one_run_after_another(tmp_path):
    """--jobs 2 (two worker processes, one thread each) against --jobs 1: the same run directories, the same
    metrics bit for bit, and a rerun skips them all."""
    from benchmarks.studies import Point, Study, run_study

    import os

    threads = max(1, len(os.sched_getaffinity(0)) // 2)
    study = Study("tiny", "q", "x", (Point("one", ("trainer.epochs=1", "trainer.max_steps_per_epoch=4",
                                                   f"trainer.num_threads={threads}")),),
                  recipe="smoke/classification")
    run_study(study, [0], str(tmp_path / "serial"), jobs=1)
    run_study(study, [0], str(tmp_path / "side"), jobs=2)
    finals = {}
    for where in ("serial", "side"):
        found = sorted((tmp_path / where).rglob("result.json"))
        assert len(found) == 3  # baseline, EMA (riding on it), SEMA
        finals[where] = {p.relative_to(tmp_path / where).as_posix(): json.loads(p.read_text()) for p in found}
        assert all(r["status"] == "completed" for r in finals[where].values())
    assert finals["serial"].keys() == finals["side"].keys()
    for key, result in finals["serial"].items():
        assert finals["side"][key]["final"] == result["final"], key
    side = finals["side"]
    assert {r["config"]["trainer"]["num_threads"] for r in side.values()} == {threads}  # cores / 2 jobs
    before = {k: r["provenance"]["date"] for k, r in side.items()}
    run_study(study, [0], str(tmp_path / "side"), jobs=2)  # everything done: skipped, nothing rewritten
    after = {p.relative_to(tmp_path / "side").as_posix(): json.loads(p.read_text())["provenance"]["date"]
             for p in (tmp_path / "side").rglob("result.json")}
    assert after == before


def test_each_study_runs_at_its_own_seeds_and_publishes_only_at_them(tmp_path, capsys):
    from benchmarks.studies import main

    assert main(["--list"]) == 0
    listed = {line.split()[0]: int(line.split()[1]) for line in capsys.readouterr().out.splitlines()}
    # runs = methods summed over the points x seeds: 3 for the long length runs, 5 for the 8-epoch studies
    assert listed == {"length": 5 * 3 * 3, "schedule": 3 * 3 * 5, "horizon": 3 * (2 + 3 * 2) * 5, "bn": 4 * 3 * 5}
    assert main(["--list", "--seeds", "0"]) == 0
    assert {line.split()[0]: int(line.split()[1]) for line in capsys.readouterr().out.splitlines()}["bn"] == 12
    assert main(["--publish", str(tmp_path), "--seeds", "3", "4", "--report-only"]) == 2
    assert "--publish writes every study at its own seeds" in capsys.readouterr().out
    assert not any(tmp_path.iterdir())  # refused before anything was written
