"""`sema-report`: every result.json under a directory -> comparison tables (markdown, CSV, terminal), plots.

runs.py        loading: result.json / analysis.json -> Run; unusable files -> Problem (listed, never fatal)
tables.py      summarising: runs -> one TaskTable per (task, dataset, model, profile): means, paired CIs,
               epochs-to-target, flatness, the winner line
formatting.py  how numbers are written (4 significant digits, mean ± std, differences with their interval)
render.py      a TaskTable as text: the cells every output shares, the markdown report and its header
outputs.py     CSV files, PNG plots, terminal tables, wandb.Table logging
cli.py         the command, and `summarize(directory, out)` for the main job
"""

from benchmarks.report.cli import main, summarize
from benchmarks.report.outputs import WANDB_MODES, log_wandb, print_tables, write_csvs, write_plots
from benchmarks.report.render import (
    convergence_rows,
    flatness_rows,
    main_columns,
    main_rows,
    provenance_header,
    render_problems,
    render_table_markdown,
)
from benchmarks.report.runs import FLATNESS_KEYS, Problem, Run, load_runs, read_analysis, read_run
from benchmarks.report.tables import (
    CONFIDENCE,
    DEFAULT_FRACTIONS,
    REFERENCES,
    ConvergenceCell,
    FlatnessRow,
    MethodSummary,
    TaskTable,
    build_tables,
    label_runs,
)

__all__ = [
    "CONFIDENCE",
    "DEFAULT_FRACTIONS",
    "FLATNESS_KEYS",
    "REFERENCES",
    "WANDB_MODES",
    "ConvergenceCell",
    "FlatnessRow",
    "MethodSummary",
    "Problem",
    "Run",
    "TaskTable",
    "build_tables",
    "convergence_rows",
    "flatness_rows",
    "label_runs",
    "load_runs",
    "log_wandb",
    "main",
    "main_columns",
    "main_rows",
    "print_tables",
    "provenance_header",
    "read_analysis",
    "read_run",
    "render_problems",
    "render_table_markdown",
    "summarize",
    "write_csvs",
    "write_plots",
]
