"""The cross-task leaderboard against hand-computed values: signed paired differences and their intervals,
win/tie/loss, percent scores, ranks, step ratios, unpaired seeds, bit-identical runs, another reference."""

from __future__ import annotations

import csv

import pytest

from benchmarks.report.leaderboard import build_leaderboard, summary_rows, write_leaderboard
from benchmarks.report.runs import load_runs
from benchmarks.report.tables import build_tables
from report_testing import write_result, write_two_tables

T_975_2 = 4.302652729911275  # Student t, 97.5% quantile, 2 degrees of freedom


def _board(tmp_path, references=("baseline", "ema"), extra=None):
    root = tmp_path / "runs"
    write_two_tables(root)
    for args, kwargs in extra or []:
        write_result(*args, **kwargs)
    runs, _ = load_runs(root)
    return build_leaderboard(build_tables(runs), references)


def _entry(board, task, label):
    return next(e for e in board.entries if e.task.startswith(task) and e.label == label)


def test_signed_differences_verdicts_scores_and_ranks_by_hand(tmp_path):
    board = _board(tmp_path)
    half = T_975_2 * 0.01 / 3**0.5  # sd of the per-seed differences is 0.01 for ema and sema
    ema, sema = _entry(board, "classification", "ema"), _entry(board, "classification", "sema")
    assert ema.deltas["baseline"].mean == pytest.approx(0.01) and ema.deltas["baseline"].ci_low == pytest.approx(
        0.01 - half)
    assert (ema.verdict, sema.verdict) == ("tie", "win")  # the interval covers 0 / lies above it
    assert ema.score == pytest.approx(100 * 0.01 / 0.82) and sema.score == pytest.approx(100 * 0.03 / 0.82)
    assert (sema.rank, ema.rank, _entry(board, "classification", "baseline").rank) == (1, 2, 3)
    # lower is better: differences are signed so that positive is better
    ema_r, sema_r = _entry(board, "regression", "ema"), _entry(board, "regression", "sema")
    assert ema_r.deltas["baseline"].mean == pytest.approx(2.5 / 3) and ema_r.verdict == "win"
    assert sema_r.deltas["baseline"].mean == pytest.approx(-1.0) and sema_r.verdict == "loss"
    assert sema_r.score == pytest.approx(-100 * 1.0 / 11.0) and ema_r.rank == 1 and sema_r.rank == 3
    rows = {row[0]: row for row in summary_rows(board)}
    assert rows["ema"][1:4] == ["1/1/0", "+4.398%", "1.50 ± 0.71"]
    assert rows["sema"][1] == "1/0/1" and rows["sema"][3] == "2.00 ± 1.41"
    assert rows["baseline"][1] == "0/0/0" and rows["baseline"][2] == "–"
    # steps to reach the baseline's final value (mean over the seeds that reach it), as a ratio to the
    # baseline's: everyone that reaches it does so at epoch 2
    assert ema.steps_ratio[1.0] == pytest.approx(1.0) and sema_r.steps_ratio[1.0] == pytest.approx(1.0)


def test_unpaired_seeds_identical_runs_and_another_reference(tmp_path):
    root = tmp_path / "runs" / "cls"
    extra = [((root, "sema3", "sema", 3), dict(final=0.9, avg=[0.5, 0.9])),  # a seed the baseline lacks
             *(((root, f"swa{s}", "swa", s), dict(final=f, avg=[0.5, f])) for s, f in enumerate([0.81, 0.84, 0.84])),
             *(((root, f"lawa{s}", "lawa", s), dict(final=0.6, avg=[0.5, 0.6])) for s in range(3))]
    board = _board(tmp_path, references=("sema", "baseline"), extra=extra)
    assert any("sema seeds [3] have no baseline run" in n for n in board.notes)
    assert _entry(board, "classification", "sema").deltas["baseline"].n == 3  # seed 3 left out of the pairs
    assert _entry(board, "classification", "swa").identical_to == ["ema"]
    assert any("ema and swa are bit-identical" in n for n in board.notes)
    ema = _entry(board, "classification", "ema")
    assert ema.deltas["sema"].mean < 0 and ema.verdict in ("loss", "tie")  # against the chosen reference
    assert _entry(board, "classification", "lawa").steps_ratio[1.0] == float("inf")  # never reached 0.82
    paths = write_leaderboard(board, tmp_path / "out", plots=True)
    assert "| never |" in (tmp_path / "out" / "leaderboard.md").read_text()
    assert [p.name for p in paths] == ["leaderboard.md", "leaderboard.csv", "leaderboard.png"]
    rows = list(csv.DictReader(open(tmp_path / "out" / "leaderboard.csv")))
    assert {r["reference"] for r in rows} == {"sema", "baseline"}
    swa = next(r for r in rows if r["method"] == "swa" and r["reference"] == "baseline")
    assert swa["identical_to"] == "ema" and float(swa["signed_diff"]) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="at least one reference"):
        build_leaderboard([], ())
