"""The README's results block: one table across tasks, made from a published folder's per-run summaries.

    python -m benchmarks.publish runs/cpu/quick results/cpu --readme README.md   # publishes, then rewrites it

For every table (task) of the folder: the compared metric and its direction, the baseline's mean, the averaging
method ranked first with its signed difference to the baseline (positive = better, whatever the metric) and its
paired 95% interval, SEMA's and EMA's differences with their verdicts, and the methods whose interval lies above 0 (better
than the baseline) or below it (worse). Then every method's wins / ties / losses over the tables (the leaderboard's
summary, benchmarks/report/leaderboard.py). The block sits between `begin_marker(folder)` and `end_marker(folder)`
in the README; a rerun replaces it, and tests/test_published_results.py rebuilds it from the committed runs and
compares, so the README cannot say what the runs do not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from benchmarks.report.leaderboard import Entry, Leaderboard, build_leaderboard, diff_cell, summary_rows
from benchmarks.report.tables import DEFAULT_FRACTIONS, TaskTable, build_tables

SHOWN = ("sema", "ema")  # methods with a column of their own


def begin_marker(folder: str) -> str:
    return f"<!-- begin {folder} summary: written by python -m benchmarks.publish ... {folder} --readme README.md -->"


def end_marker(folder: str) -> str:
    return f"<!-- end {folder} summary -->"


def _cell(entry: Entry | None) -> str:
    if entry is None:
        return "–"
    return f"{diff_cell(entry.deltas.get('baseline'))} {entry.verdict}"


def _names(entries: Sequence[Entry]) -> str:
    return ", ".join(e.label for e in entries) or "none"


def summary_block(tables: Sequence[TaskTable], board: Leaderboard, folder: str) -> str:
    """The markdown between the markers (markers included)."""
    lines = [begin_marker(folder), "",
             "| task | metric | baseline | best averaging method: vs baseline | SEMA: vs baseline | EMA: vs baseline | "
             "better than baseline | worse |", "|---|---|---|---|---|---|---|---|"]
    for table in tables:
        mine = {e.label: e for e in board.entries if e.task == table.title}
        base = mine.get("baseline")
        others = [e for e in mine.values() if e.label != "baseline"]
        best = f"{(top := min(others, key=lambda e: e.rank)).label}: {_cell(top)}" if others else "–"
        arrow = "higher is better" if table.higher_is_better else "lower is better"
        lines.append(" | ".join([
            f"| {table.title.split(' (profile')[0]}", f"{table.headline} ({arrow})",
            "–" if base is None else f"{base.mean:.4g} ({base.seeds} seeds)", best,
            *(_cell(mine.get(m)) for m in SHOWN),
            _names([e for e in mine.values() if e.verdict == "win"]),
            _names([e for e in mine.values() if e.verdict == "loss"])]) + " |")
    lines += ["", "In words: " + in_words(board)]
    lines += ["", "| method | wins / ties / losses vs baseline | mean score | mean rank | tables |",
              "|---|---|---|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in summary_rows(board)]
    lines += ["", end_marker(folder)]
    return "\n".join(lines)


def _task(title: str) -> str:
    return title.split(" / ")[0]


def in_words(board: Leaderboard) -> str:
    """Which methods are significantly better than the baseline, and where; then SEMA's and EMA's verdicts."""
    wins = {}
    for e in board.entries:
        if e.verdict == "win":
            wins.setdefault(e.label, []).append(_task(e.task))
    words = ["; ".join(f"{label} is significantly better than the baseline on {', '.join(tasks)}"
                       for label, tasks in wins.items()) + "." if wins else
             "No method is significantly better than the baseline on any task."]
    for label, name in (("sema", "SEMA"), ("ema", "EMA")):
        mine = [e for e in board.of(label) if e.verdict != "-"]  # "-": a table without a baseline run
        if not mine:
            continue
        by = {v: [_task(e.task) for e in mine if e.verdict == v] for v in ("win", "loss", "tie", "n/a")}
        parts = [f"{what} on {', '.join(by[v])}" for v, what in (
            ("win", "better"), ("loss", "worse"), ("tie", "not distinguishable from it"),
            ("n/a", "without an interval yet (one seed)")) if by[v]]
        words.append(f"{name} against the baseline: {'; '.join(parts)}.")
    return " ".join(words)


def block_of(runs_dir: Path, folder: str) -> str:
    """summary_block() of the runs under `runs_dir` (a published folder's runs/), as sema-report tables them."""
    from benchmarks.report.runs import load_runs

    runs, _ = load_runs(Path(runs_dir))
    if not runs:
        raise FileNotFoundError(f"no completed run under {runs_dir}: nothing to summarise")
    tables = build_tables(runs, sorted(set(DEFAULT_FRACTIONS) | {1.0}))
    return summary_block(tables, build_leaderboard(tables), folder)


def current_block(readme_text: str, folder: str) -> str | None:
    """The block the README holds for `folder` (markers included), or None."""
    start = readme_text.find(begin_marker(folder))
    stop = readme_text.find(end_marker(folder), max(start, 0))
    if start < 0 or stop < 0:
        return None
    return readme_text[start:stop + len(end_marker(folder))]


def rewrite(readme: Path, block: str, folder: str) -> None:
    """Replace the README's block for `folder` with `block`; refuses a README without the markers (say where the
    block goes by putting them in)."""
    from benchmarks.results import write_text_atomic

    text = Path(readme).read_text()
    old = current_block(text, folder)
    if old is None:
        raise ValueError(f"{readme} has no '{begin_marker(folder)}' ... '{end_marker(folder)}' lines: put the two "
                         "markers where the summary goes, then rerun")
    start = text.index(old)
    write_text_atomic(Path(readme), text[:start] + block + text[start + len(old):])
