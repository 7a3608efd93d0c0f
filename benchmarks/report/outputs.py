"""Writing: a TaskTable's CSV files (raw numbers) and PNG plots, the terminal tables (rich), and the
wandb.Table logging."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Optional, Sequence

from benchmarks.plots import plot_final, plot_learning_curves
from benchmarks.report.render import main_columns, main_rows
from benchmarks.report.runs import Problem
from benchmarks.report.tables import TaskTable
from benchmarks.stats import PairedDiff

WANDB_MODES = ("disabled", "offline", "online")


def _write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    """CSV with raw numbers; NaN and None become empty cells."""
    clean = lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else v  # noqa: E731
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows([[clean(v) for v in row] for row in rows])
    return path


def _delta_columns(references: dict[str, str]) -> list[str]:
    return [
        f"{c}_vs_{ref}" if c == "n_pairs" else f"delta_vs_{ref}{c}"
        for ref in references
        for c in ("", "_ci_low", "_ci_high", "n_pairs")
    ]


def _delta_values(deltas: dict[str, Optional[PairedDiff]], references: dict[str, str]) -> list:
    values = []
    for ref in references:
        d = deltas.get(ref)
        values += [d.mean, d.ci_low, d.ci_high, d.n] if d else [None, None, None, 0]
    return values


def write_csvs(table: TaskTable, out: Path) -> list[Path]:
    """Raw numbers (not formatted strings): one row per method; convergence and flatness in long format."""
    header = [
        "task",
        "dataset",
        "model",
        "profile",
        "statistic",
        "method",
        "headline",
        "higher_is_better",
        "n_seeds",
        "n_failed",
        "mean",
        "std",
        "online_mean",
        "online_std",
    ] + _delta_columns(table.references)
    rows = [
        [
            *table.key,
            m.label,
            table.headline,
            table.higher_is_better,
            len(m.seeds),
            len(m.failed),
            m.final_stats.mean,
            m.final_stats.std,
            m.online_stats.mean,
            m.online_stats.std,
        ]
        + _delta_values(m.deltas, table.references)
        for m in table.methods
    ]
    paths = [_write_csv(out / f"{table.slug}.csv", header, rows)]
    if table.convergence:
        header = [
            "method",
            "fraction",
            "target",
            "n_reached",
            "n_runs",
            "epochs_mean",
            "epochs_std",
            "time_s_mean",
            "time_s_std",
        ]
        rows = [
            [
                label,
                c.fraction,
                c.target,
                c.n_reached,
                c.n_runs,
                c.epochs.mean,
                c.epochs.std,
                c.time_s.mean,
                c.time_s.std,
            ]
            for label, cells in table.convergence.items()
            for c in cells
        ]
        paths.append(_write_csv(out / f"{table.slug}_convergence.csv", header, rows))
    if table.flatness:
        header = ["metric", "method", "n", "mean", "std"] + _delta_columns(table.references)
        rows = [
            [r.metric, r.label, r.stats.n, r.stats.mean, r.stats.std]
            + _delta_values(r.deltas, table.references)
            for r in table.flatness
        ]
        paths.append(_write_csv(out / f"{table.slug}_flatness.csv", header, rows))
    return paths


def write_plots(table: TaskTable, out: Path) -> dict[str, str]:
    """The two PNGs of a table; returns {caption: file name} for the markdown."""
    images = {}
    if table.curves:
        plot_learning_curves(
            table.curves,
            table.headline,
            f"{table.title}\nlearning curves, mean ± std over seeds (dashed: online weights)",
            out / f"{table.slug}_curves.png",
        )
        images["learning curves"] = f"{table.slug}_curves.png"
    done = [m for m in table.methods if m.seeds]
    if done:
        plot_final(
            [f"{m.label} (n={len(m.seeds)})" for m in done],
            [m.final_stats.mean for m in done],
            [m.final_stats.std for m in done],
            table.headline,
            f"{table.title}\nfinal {table.headline}, mean ± std over seeds",
            out / f"{table.slug}_final.png",
        )
        images[f"final {table.headline}"] = f"{table.slug}_final.png"
    return images


def print_tables(tables: Sequence[TaskTable], problems: Sequence[Problem], console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console()
        if not console.is_terminal:  # logs and pipes: do not squeeze the table into 80 columns
            console = Console(width=180)
    for t in tables:
        columns, rows = main_columns(t), main_rows(t)
        if console.width < 150 and t.convergence:  # a narrow terminal: the wall-time column is in report.md
            columns, rows = columns[:-1], [row[:-1] for row in rows]
        rich_table = Table(title=t.title, title_style="bold")
        for i, column in enumerate(columns):
            rich_table.add_column(column, overflow="fold", no_wrap=i == 0)
        for row in rows:
            rich_table.add_row(*row)
        console.print(rich_table)
        console.print(t.winner_line.replace("**", ""), highlight=False)
        for r in (r for m in t.methods for r in m.failed):
            console.print(f"[red]failed[/red] {r.label} seed {r.seed}: {r.error_last_line}", highlight=False)
    for p in problems:
        console.print(f"[yellow]unusable[/yellow] {p.path}: {p.reason}", highlight=False)


def print_leaderboard(board, console=None) -> None:
    """The leaderboard's summary (report/leaderboard.py) as a terminal table: the verdict across tasks."""
    from rich.console import Console
    from rich.table import Table

    from benchmarks.report.leaderboard import summary_rows

    console = console or Console(width=180)
    first = board.references[0]
    table = Table(title=f"Leaderboard across {len(board.tasks)} table(s), against {first}", title_style="bold")
    for column in ("method", f"W/T/L vs {first}", "mean score", "mean rank", "tables"):
        table.add_column(column)
    for row in summary_rows(board):
        table.add_row(*row)
    console.print(table)
    for note in board.notes:
        console.print(f"[dim]{note}[/dim]", highlight=False)


def log_wandb(tables: Sequence[TaskTable], mode: str, out: Path, directory: Path) -> None:
    """Log each table as a wandb.Table in one job_type="aggregate" run (offline mode needs no network)."""
    if mode not in WANDB_MODES:
        raise ValueError(f"wandb mode {mode!r}; allowed: {', '.join(WANDB_MODES)}")
    if mode == "disabled":
        return
    import wandb

    run = wandb.init(
        project="sema-bench",
        job_type="aggregate",
        mode=mode,
        dir=str(out),
        name=f"report-{Path(directory).name}",
        config={"directory": str(directory)},
    )
    for t in tables:
        run.log({f"report/{t.slug}": wandb.Table(columns=main_columns(t), data=main_rows(t))})
    run.finish()
