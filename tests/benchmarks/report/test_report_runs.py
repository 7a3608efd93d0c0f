"""sema-report loading: unreadable and partial result files are listed with the reason, never fatal."""

import json

from report_testing import build_sweep, read_csv, write_result

from benchmarks.report import load_runs, summarize


def test_unreadable_and_partial_results_are_reported_not_fatal(tmp_path):
    root = build_sweep(tmp_path / "sweep")
    (root / "torn").mkdir()
    (root / "torn" / "result.json").write_text('{"status": "compl')
    (root / "partial").mkdir()
    (root / "partial" / "result.json").write_text(
        json.dumps(
            {
                "status": "completed",
                "task": "classification",
                "method": "ema",
                "seed": 5,
                "headline": "top1",
                "final": {},
            }
        )
    )
    write_result(root, "no_direction", "ema", 6, final=0.8, avg=[0.8], higher_is_better=None)
    write_result(root, "in_progress", "ema", 7, status="running", avg=[0.7])
    runs, problems = load_runs(root)
    assert len(runs) == 11
    reasons = {p.path.parent.name: p.reason for p in problems}
    assert "not valid JSON" in reasons["torn"]
    assert "final['top1']" in reasons["partial"]
    assert "higher_is_better" in reasons["no_direction"]
    markdown = summarize(root, plots=False)
    assert "## Unusable result files" in markdown and "3 unusable" in markdown
    assert "- `torn/result.json`: not valid JSON" in markdown  # paths relative to the reported directory
    assert "Not finished (status running, not counted): ema seed 7" in markdown
    rows = read_csv(root / "report" / "classification_fashion_mnist_mlp_quick.csv")
    assert rows["ema"]["n_seeds"] == "3"


def test_a_recipe_chooses_the_statistic_the_report_compares(tmp_path):
    import pytest

    from benchmarks.report.runs import read_run

    run_dir = write_result(tmp_path, "r", "sema", 0, final=0.80, avg=[0.5, 0.9, 0.8])
    record = json.loads((run_dir / "result.json").read_text())
    record["median_last"], record["best"] = {"top1": 0.8}, {"top1": 0.9}
    record["config"]["trainer"]["reported"] = "best"
    (run_dir / "result.json").write_text(json.dumps(record))
    run = read_run(run_dir / "result.json")
    assert (run.statistic, run.final["top1"]) == ("best", 0.9)
    record["config"]["trainer"]["reported"] = "mean"
    (run_dir / "result.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="trainer.reported='mean' is not one of final, best, median_last"):
        read_run(run_dir / "result.json")


def test_the_online_column_uses_the_recipes_statistic_and_statistics_never_share_a_table(tmp_path):
    from benchmarks.report.runs import read_run
    from benchmarks.report.tables import build_tables

    run_dir = write_result(tmp_path, "r", "sema", 0, final=0.80, avg=[0.5, 0.9, 0.8], online=[0.4, 0.7, 0.6])
    record = json.loads((run_dir / "result.json").read_text())
    record["median_last"], record["median_last_online"] = {"top1": 0.8}, {"top1": 0.6}
    record["config"]["trainer"]["reported"] = "median_last"
    (run_dir / "result.json").write_text(json.dumps(record))
    run = read_run(run_dir / "result.json")
    assert (run.final["top1"], run.final_online["top1"]) == (0.8, 0.6)  # not final_online's last value (0.6 too)
    record["median_last_online"] = {"top1": 0.55}
    (run_dir / "result.json").write_text(json.dumps(record))
    assert read_run(run_dir / "result.json").final_online == {"top1": 0.55}
    plain = read_run(write_result(tmp_path, "p", "ema", 0, final=0.7, avg=[0.6, 0.7]) / "result.json")
    tables = build_tables([read_run(run_dir / "result.json"), plain])
    assert sorted(t.statistic for t in tables) == ["final", "median_last"]
    assert [t.title.endswith(", median_last)") for t in tables if t.statistic == "median_last"] == [True]
