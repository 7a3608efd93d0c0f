"""The sema-report command: where it writes, its exit codes, and the console-script entry point."""

from importlib.metadata import entry_points

from report_testing import build_sweep

from benchmarks.report import main


def test_cli_writes_to_out_and_exits_zero(tmp_path, capsys):
    sweep = build_sweep(tmp_path / "sweep")
    out = tmp_path / "results"
    assert main([str(sweep), "--out", str(out), "--no-plots", "--fractions", "0.5"]) == 0
    printed = capsys.readouterr().out
    assert "baseline" in printed and "sema" in printed and str(out) in printed
    report = (out / "report.md").read_text()
    assert f"- command: `sema-report {sweep} --out {out} --no-plots --fractions 0.5`" in report
    assert (out / "classification_fashion_mnist_mlp_quick.md").exists()
    assert not (sweep / "report").exists()


def test_cli_without_results_fails_clearly(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 1
    assert "no result.json files" in capsys.readouterr().err
    assert main([str(tmp_path / "missing")]) == 1
    assert "is not a directory" in capsys.readouterr().err
    assert main([str(tmp_path / "empty"), "--fractions", "1.5"]) == 1
    assert "(0, 1]" in capsys.readouterr().err


def test_console_script_runs_the_package_main():
    # pyproject.toml's `sema-report = "benchmarks.report:main"`, as installed, must still reach the command.
    [script] = [e for e in entry_points(group="console_scripts") if e.name == "sema-report"]
    assert script.value == "benchmarks.report:main"
    assert script.load() is main
