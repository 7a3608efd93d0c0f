"""The committed tables agree with the committed per-run summaries they were made from: every results/<folder>/
published by `python -m benchmarks.publish` (it holds a runs/ folder) is regenerated from its runs/ into a
temporary folder, and every table (markdown past the provenance lines of the reporting process, and CSV) must be
the same. A number typed into a table, or a table left behind by an older set of runs, fails here."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.publish import RUNS_DIR
from benchmarks.report import summarize

RESULTS = Path(__file__).resolve().parents[1] / "results"
PUBLISHED = sorted(p.parent for p in RESULTS.glob(f"*/{RUNS_DIR}") if p.is_dir())
# Lines of a report's header that describe the process that wrote it, not the runs.
OF_THE_WRITER = ("# sema-report:", "- command:", "- report code commit:", "- date:", "- machine:")


def _content(path: Path) -> list[str]:
    """The lines that come from the runs: not the writer's header lines, not the image links (plots=False here)."""
    return [line for line in path.read_text().splitlines()
            if not line.startswith(OF_THE_WRITER) and not line.startswith("![") and line.strip()]


def test_there_is_a_published_folder():
    assert PUBLISHED, "no results/<folder>/runs/: the CPU reproduction publishes results/cpu"


@pytest.mark.parametrize("folder", PUBLISHED, ids=lambda p: p.name)
def test_every_published_table_is_what_its_runs_give(folder, tmp_path):
    summarize(folder / RUNS_DIR, tmp_path, plots=False, command="test")
    made = sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".md", ".csv"))
    committed = sorted(p.name for p in folder.iterdir() if p.suffix in (".md", ".csv"))
    assert committed == made, f"{folder}: tables without runs, or runs without tables"
    for name in made:
        assert _content(folder / name) == _content(tmp_path / name), f"{folder / name} differs from its runs"
