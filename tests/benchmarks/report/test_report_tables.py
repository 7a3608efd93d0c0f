"""sema-report tables on hand-built result.json files: the numbers are checked against hand computations."""

import csv
import math

import pytest
from report_testing import T975_2, build_sweep, read_csv, write_result
from scipy import stats as scipy_stats

from benchmarks.report import summarize


def test_main_table_means_stds_and_paired_intervals(tmp_path):
    sweep = build_sweep(tmp_path / "sweep")
    markdown = summarize(sweep)
    rows = read_csv(sweep / "report" / "classification_fashion_mnist_mlp_quick.csv")
    assert list(rows) == ["baseline", "ema", "sema"]
    base, ema, sema = rows["baseline"], rows["ema"], rows["sema"]
    assert float(base["mean"]) == pytest.approx(0.82) and float(base["std"]) == pytest.approx(0.02)
    assert float(ema["mean"]) == pytest.approx(0.83) and float(ema["std"]) == pytest.approx(math.sqrt(3e-4))
    assert float(sema["mean"]) == pytest.approx(0.85) and float(sema["std"]) == pytest.approx(math.sqrt(3e-4))
    assert float(sema["online_mean"]) == pytest.approx(0.84)
    # SEMA - baseline per seed: 0.03, 0.04, 0.02 -> mean 0.03, sd 0.01.
    half = T975_2 * 0.01 / math.sqrt(3)
    assert float(sema["delta_vs_baseline"]) == pytest.approx(0.03)
    assert float(sema["delta_vs_baseline_ci_low"]) == pytest.approx(0.03 - half)
    assert float(sema["delta_vs_baseline_ci_high"]) == pytest.approx(0.03 + half)
    assert sema["n_pairs_vs_baseline"] == "3"
    # EMA - baseline against scipy's paired t-test interval.
    ref = scipy_stats.ttest_rel([0.81, 0.84, 0.84], [0.80, 0.82, 0.84]).confidence_interval(0.95)
    assert float(ema["delta_vs_baseline_ci_low"]) == pytest.approx(ref.low)
    assert float(ema["delta_vs_baseline_ci_high"]) == pytest.approx(ref.high)
    assert float(sema["delta_vs_ema"]) == pytest.approx(0.02)
    assert base["delta_vs_baseline"] == "" and base["n_pairs_vs_baseline"] == "0"
    # Seeds and failures: the failed SEMA run is counted but not averaged.
    assert (sema["n_seeds"], sema["n_failed"], base["n_failed"]) == ("3", "1", "0")
    assert "RuntimeError: loss is nan at step 12" in markdown
    assert "**Winner on top1 (higher is better): sema**" in markdown and "SEMA wins." in markdown
    for header in (
        "- command:",
        "- report code commit:",
        "- date:",
        "- machine:",
        "- runs: 10 result.json",
        "- runs' commits: abc1234def (10 runs)",
        "- runs' machines: x86_64 x 2 CPUs, no GPU, Linux-x86_64 (10 runs)",
    ):
        assert header in markdown


def test_epochs_and_time_to_target(tmp_path):
    sweep = build_sweep(tmp_path / "sweep")
    summarize(sweep, fractions=[0.9])
    with (sweep / "report" / "classification_fashion_mnist_mlp_quick_convergence.csv").open() as fh:
        cells = {(r["method"], float(r["fraction"])): r for r in csv.DictReader(fh)}
    # Baseline: starts at mean(0.5, 0.6, 0.7) = 0.6, ends at 0.82.
    assert float(cells["baseline", 1.0]["target"]) == pytest.approx(0.82)
    assert float(cells["baseline", 0.9]["target"]) == pytest.approx(0.6 + 0.9 * 0.22)  # 0.798
    # 0.82: baseline seed 0 never (max 0.80), seed 1 at epoch 4, seed 2 at epoch 3.
    b = cells["baseline", 1.0]
    assert (b["n_reached"], b["n_runs"]) == ("2", "3")
    assert float(b["epochs_mean"]) == pytest.approx(3.5) and float(b["epochs_std"]) == pytest.approx(
        math.sqrt(0.5)
    )
    assert float(b["time_s_mean"]) == pytest.approx((41 + 32) / 2)  # time_s = 10 * epoch + seed
    # SEMA reaches 0.82 at epochs 2, 2, 3 (averaged weights), EMA at 3, 3 (seed 0 peaks at 0.81).
    s = cells["sema", 1.0]
    assert float(s["epochs_mean"]) == pytest.approx(7 / 3) and float(s["epochs_std"]) == pytest.approx(
        math.sqrt(1 / 3)
    )
    assert float(s["time_s_mean"]) == pytest.approx((20 + 21 + 32) / 3)
    assert cells["ema", 1.0]["n_reached"] == "2" and float(cells["ema", 1.0]["epochs_mean"]) == 3.0
    # 0.798: baseline seed 0 at epoch 4 (0.80), seeds 1, 2 at epoch 3 and 2.
    assert float(cells["baseline", 0.9]["epochs_mean"]) == pytest.approx(3.0)
    report = (sweep / "report" / "report.md").read_text()
    assert "3.5 ± 0.7071 (2/3 reached)" in report


def test_never_reached_target_says_not_reached(tmp_path):
    root = tmp_path / "runs"
    write_result(root, "b0", "baseline", 0, final=0.9, avg=[0.5, 0.9])
    write_result(root, "s0", "sema", 0, final=0.6, avg=[0.5, 0.6])
    markdown = summarize(root, plots=False)
    sema_row = next(line for line in markdown.splitlines() if line.startswith("| sema |"))
    assert "not reached" in sema_row
    # One seed: no interval, n is stated.
    assert "-0.3 (n=1)" in sema_row
    assert "**SEMA does not win**" in markdown


def test_lower_is_better_metric(tmp_path):
    root = tmp_path / "runs"
    for seed, (b, s) in enumerate([(0.50, 0.30), (0.40, 0.35)]):
        write_result(
            root,
            f"b{seed}",
            "baseline",
            seed,
            final=b,
            avg=[1.0, 0.7, b],
            headline="mae",
            higher_is_better=False,
        )
        write_result(
            root, f"s{seed}", "sema", seed, final=s, avg=[0.9, s, s], headline="mae", higher_is_better=False
        )
    markdown = summarize(root, plots=False)
    assert "**Winner on mae (lower is better): sema**" in markdown
    assert "mae ↓" in markdown
    rows = read_csv(root / "report" / "classification_fashion_mnist_mlp_quick.csv")
    assert rows["sema"]["higher_is_better"] == "False"
    assert float(rows["sema"]["delta_vs_baseline"]) == pytest.approx(-0.125)  # (-0.2 - 0.05) / 2
    with (root / "report" / "classification_fashion_mnist_mlp_quick_convergence.csv").open() as fh:
        cells = {(r["method"], float(r["fraction"])): r for r in csv.DictReader(fh)}
    # Target 0.45 (mean baseline final): baseline seed 0 (ends at 0.5) never gets there, seed 1 at epoch 3;
    # SEMA reaches it at epoch 2 with both seeds.
    assert float(cells["baseline", 1.0]["target"]) == pytest.approx(0.45)
    assert cells["baseline", 1.0]["n_reached"] == "1" and float(cells["baseline", 1.0]["epochs_mean"]) == 3.0
    assert cells["sema", 1.0]["n_reached"] == "2" and float(cells["sema", 1.0]["epochs_mean"]) == 2.0


def test_method_variants_are_separate_rows(tmp_path):
    root = tmp_path / "runs"
    for seed in (0, 1):
        write_result(root, f"b{seed}", "baseline", seed, final=0.8, avg=[0.8])
        for every in (1, 2):
            write_result(
                root,
                f"s{every}_{seed}",
                "sema",
                seed,
                final=0.8 + every / 100,
                avg=[0.8 + every / 100],
                config_method={"name": "sema", "switch_every": every},
            )
    summarize(root, plots=False)
    rows = read_csv(root / "report" / "classification_fashion_mnist_mlp_quick.csv")
    # num_threads differs between seeds but is operational, so it does not split rows.
    assert list(rows) == ["baseline", "sema (switch_every=1)", "sema (switch_every=2)"]
    assert float(rows["sema (switch_every=2)"]["delta_vs_baseline"]) == pytest.approx(0.02)


def test_flatness_table_from_analysis_files(tmp_path):
    root = tmp_path / "runs"
    for seed, (b_eig, s_eig) in enumerate([(10.0, 6.0), (12.0, 7.0), (14.0, 11.0)]):
        for method, eig in (("baseline", b_eig), ("sema", s_eig)):
            # The layout sema-analyze writes: per-weights measures plus bookkeeping the report must skip.
            online = {
                "hessian_top_eig": eig + 1,
                "hessian_top_eig_iterations": 20,
                "hessian_trace": 100.0,
                "sharpness": {"0.05": 0.1},
                "timing_s": {"hessian_top_eig": 1.5},
            }
            average = {"hessian_top_eig": eig, "hessian_trace": 90.0, "sharpness": {"0.05": 0.05}}
            analysis = {
                "online": online,
                "average": average if method != "baseline" else None,
                "timing_s": {"total": 3.0},
                "settings": {"rhos": [0.05]},
            }
            write_result(root, f"{method}{seed}", method, seed, final=0.8, avg=[0.8], analysis=analysis)
    markdown = summarize(root, plots=False)
    assert "### Flatness and sharpness" in markdown
    with (root / "report" / "classification_fashion_mnist_mlp_quick_flatness.csv").open() as fh:
        rows = {(r["metric"], r["method"]): r for r in csv.DictReader(fh)}
    assert {m for m, _ in rows} == {
        f"{w}.{k}"
        for w in ("average", "online")
        for k in ("hessian_top_eig", "hessian_trace", "sharpness.0.05")
    }
    eig = rows["average.hessian_top_eig", "sema"]
    assert float(eig["mean"]) == pytest.approx(8.0) and float(eig["std"]) == pytest.approx(math.sqrt(7))
    # The baseline's reported weights are its online ones (eig + 1 = 11, 13, 15), so SEMA's averaged weights
    # differ from them by -5, -6, -4: mean -5, sd 1.
    assert float(rows["average.hessian_top_eig", "baseline"]["mean"]) == pytest.approx(13.0)
    assert float(eig["delta_vs_baseline"]) == pytest.approx(-5.0)
    assert float(eig["delta_vs_baseline_ci_high"]) == pytest.approx(-5.0 + T975_2 / math.sqrt(3))
    assert float(rows["online.hessian_top_eig", "sema"]["delta_vs_baseline"]) == pytest.approx(-4.0)


def test_the_machine_line_names_the_cpu_kind_when_the_run_recorded_it():
    from benchmarks.report.render import _machine_text

    old = {"platform": "Linux-x86_64", "cpu": "x86_64", "cpu_count": 2, "gpus": []}
    assert _machine_text(old) == "x86_64 x 2 CPUs, no GPU, Linux-x86_64"  # runs from before the field existed
    new = {**old, "cpu_model": "AMD EPYC", "cpu_capability": "AVX512"}
    assert _machine_text(new) == "AMD EPYC (AVX512) x 2 CPUs, no GPU, Linux-x86_64"
