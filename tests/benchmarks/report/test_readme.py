"""The README's results block (benchmarks/report/readme.py) against hand-computed verdicts and intervals, on the
leaderboard tests' two tables: accuracy (SEMA better, EMA a tie) and error (EMA better, SEMA worse)."""

from __future__ import annotations

from benchmarks.report.leaderboard import build_leaderboard
from benchmarks.report.readme import begin_marker, end_marker, in_words, summary_block
from benchmarks.report.runs import load_runs
from benchmarks.report.tables import build_tables
from report_testing import write_two_tables


def _tables(tmp_path):
    root = tmp_path / "runs"
    write_two_tables(root)
    runs, _ = load_runs(root)
    tables = build_tables(runs)
    return tables, build_leaderboard(tables)


def test_the_block_names_the_best_method_with_its_interval_and_the_verdicts_by_hand(tmp_path):
    tables, board = _tables(tmp_path)
    block = summary_block(tables, board, "results/x").splitlines()
    assert block[0] == begin_marker("results/x") and block[-1] == end_marker("results/x")
    cls = next(line for line in block if line.startswith("| classification"))
    cells = [c.strip() for c in cls.strip("|").split("|")]
    # SEMA - baseline per seed: +0.03, +0.04, +0.02: mean 0.03, sd 0.01, half-width t(0.975, 2) * 0.01 / sqrt(3)
    # = 0.02484; EMA: +0.01, +0.02, 0: the interval [-0.01484, +0.03484] covers 0
    assert cells[1:] == ["top1 (higher is better)", "0.82 (3 seeds)", "sema: +0.03 [+0.005159, +0.05484] win",
                         "+0.03 [+0.005159, +0.05484] win", "+0.01 [-0.01484, +0.03484] tie", "sema", "none"]
    reg = [c.strip() for c in next(line for line in block if line.startswith("| regression")).strip("|").split("|")]
    assert reg[1:3] == ["mae (lower is better)", "11 (3 seeds)"]
    assert reg[3].startswith("ema: +0.8333 [") and reg[3].endswith("] win")  # 11 - 10.1667, signed: lower is better
    assert reg[4].startswith("-1 [") and reg[4].endswith("] loss") and reg[6:] == ["ema", "sema"]


def test_the_words_say_who_beats_the_baseline_where(tmp_path):
    _, board = _tables(tmp_path)
    assert in_words(board) == (
        "sema is significantly better than the baseline on classification; ema is significantly better than the "
        "baseline on regression. SEMA against the baseline: better on classification; worse on regression. EMA "
        "against the baseline: better on regression; not distinguishable from it on classification.")
