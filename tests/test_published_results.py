"""The committed tables agree with the committed per-run summaries they were made from: every results/<folder>/
published by `python -m benchmarks.publish` (it holds a runs/ folder) is regenerated from its runs/ into a
temporary folder, and every table (markdown past the provenance lines of the reporting process, and CSV) must be
the same. A number typed into a table, or a table left behind by an older set of runs, fails here."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.publish import RUNS_DIR
from benchmarks.report import summarize
from benchmarks.report.readme import block_of, current_block, rewrite
from benchmarks.studies import STUDIES_FILE, published_text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
STUDIES = sorted(p.parent for p in RESULTS.glob(f"*/{STUDIES_FILE}"))  # benchmarks.studies --publish
PUBLISHED = sorted(p.parent for p in RESULTS.glob(f"*/{RUNS_DIR}") if p.is_dir() and p.parent not in STUDIES)
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


@pytest.mark.parametrize("folder", PUBLISHED, ids=lambda p: p.name)
def test_the_readme_summary_of_a_published_folder_is_what_its_runs_give(folder):
    name = f"results/{folder.name}"
    held = current_block((ROOT / "README.md").read_text(), name)
    assert held is not None, f"README.md has no summary of {name}: python -m benchmarks.publish RUNS {name} --readme README.md"
    assert held == block_of(folder / RUNS_DIR, name), (
        f"README.md's summary of {name} differs from its runs: rerun python -m benchmarks.publish RUNS {name} --readme "
        "README.md")


def test_the_readme_block_is_replaced_between_its_markers_and_refused_without_them(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\nbefore\n<!-- begin results/cpu summary: old -->\n| 1 |\n<!-- end results/cpu summary -->\nafter\n")
    with pytest.raises(ValueError, match="has no '<!-- begin results/quick summary"):
        rewrite(readme, "new", "results/quick")
    held = current_block(readme.read_text(), "results/cpu")
    assert held is None  # the begin marker must be the one the writer makes, word for word
    from benchmarks.report.readme import begin_marker, end_marker

    block = f"{begin_marker('results/cpu')}\n| 2 |\n{end_marker('results/cpu')}"
    readme.write_text(readme.read_text().replace("<!-- begin results/cpu summary: old -->", begin_marker("results/cpu")))
    rewrite(readme, block, "results/cpu")
    assert readme.read_text() == f"# x\n\nbefore\n{block}\nafter\n"
    rewrite(readme, block, "results/cpu")  # a second rewrite changes nothing
    assert readme.read_text() == f"# x\n\nbefore\n{block}\nafter\n"


@pytest.mark.parametrize("folder", STUDIES, ids=lambda p: p.name)
def test_a_published_studies_report_is_what_its_runs_give(folder):
    """Every study's section from <folder>/runs (each study at its own seeds), and the statistic section of
    results/cpu/runs."""
    made = published_text(folder, RESULTS / "cpu" / RUNS_DIR)
    committed = (folder / STUDIES_FILE).read_text()
    keep = lambda text: [line for line in text.splitlines()  # noqa: E731
                         if not line.startswith(OF_THE_WRITER) and line.strip()]
    assert keep(committed) == keep(made), f"{folder / STUDIES_FILE} differs from its runs"
