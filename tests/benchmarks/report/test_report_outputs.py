"""sema-report outputs besides markdown and CSV: the PNG plots and the wandb.Table (offline run)."""

import json

import pytest
from report_testing import build_sweep

from benchmarks.report import main, summarize


def test_plots_are_valid_pngs(tmp_path):
    import matplotlib.image

    sweep = build_sweep(tmp_path / "sweep")
    markdown = summarize(sweep)
    for name in ("curves", "final"):
        path = sweep / "report" / f"classification_fashion_mnist_mlp_quick_{name}.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
        assert path.name in markdown


@pytest.mark.slow
def test_wandb_offline_logs_the_table(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    sweep = build_sweep(tmp_path / "sweep")
    out = tmp_path / "report"
    assert main([str(sweep), "--out", str(out), "--no-plots", "--wandb-mode", "offline"]) == 0
    [table_file] = (out / "wandb").glob("offline-run-*/files/media/table/report/*.table.json")
    logged = json.loads(table_file.read_text())
    assert logged["columns"][:4] == ["method", "seeds", "failed", "top1 ↑"]
    assert [row[0] for row in logged["data"]] == ["baseline", "ema", "sema"]
    assert logged["data"][2][3] == "0.85 ± 0.01732"
