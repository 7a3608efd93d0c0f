"""`sema-report DIR`: every result.json under DIR -> comparison tables (markdown, CSV, terminal) and plots.

    sema-report runs/quick                               # writes runs/quick/report/
    sema-report multirun/ --out results/quick            # choose where the files go
    sema-report multirun/ --wandb-mode offline           # also log the tables as wandb.Table (offline run)
    sema-report runs/ --reference my_method ema          # the leaderboard's deltas against one's own method

One table per (task, dataset, model, profile). For every method: mean +- std over seeds of the headline
metric (the averaged weights' for averaging methods, as in the paper) and of the online weights'; the paired
difference to the baseline and to EMA with a 95% t interval (pairs = shared seeds); epochs and wall time to
reach the baseline's final value and fixed fractions of the way to it; the seeds and failed runs. A line names
the winner and says so plainly when SEMA does not win. `analysis.json` files (by `sema-analyze`, next to
result.json) add a flatness/sharpness table. Unreadable or partial result files are listed, never fatal.
Across tables, a leaderboard (report/leaderboard.py: leaderboard.md/.csv/.png): per method its signed differences
to the reference methods, wins/ties/losses, a normalised score, its mean rank and the steps it needs.

`summarize(directory, out=None) -> str` does the same as a function (the main job calls it at the end).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from benchmarks.report.leaderboard import build_leaderboard, render_leaderboard, write_leaderboard
from benchmarks.report.outputs import WANDB_MODES, log_wandb, print_leaderboard, print_tables, write_csvs, write_plots
from benchmarks.report.render import provenance_header, render_problems, render_table_markdown
from benchmarks.report.runs import load_runs
from benchmarks.report.tables import DEFAULT_FRACTIONS, build_tables


def summarize(
    directory,
    out=None,
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    plots: bool = True,
    wandb_mode: str = "disabled",
    command: Optional[str] = None,
    console=None,
    references: Sequence[str] = ("baseline", "ema"),
) -> str:
    """Read every result.json under `directory`, print the tables, write them under `out` (default
    `<directory>/report/`), and return the markdown report. Raises FileNotFoundError when there is nothing to
    report (no directory, or no usable result.json in it)."""
    directory = Path(directory)
    bad = [f for f in fractions if not 0 < f <= 1]
    if bad:
        raise ValueError(f"target fractions must be in (0, 1], got {bad}")
    fractions = sorted(set(fractions) | {1.0})  # 1.0 (the baseline's final value) feeds the main table
    if not directory.is_dir():
        raise FileNotFoundError(
            f"{directory} is not a directory; pass the run or sweep directory holding result.json files"
        )
    runs, problems = load_runs(directory)
    if not runs:
        found = (
            f"{len(problems)} result.json file(s), none usable: "
            + "; ".join(f"{p.path}: {p.reason}" for p in problems)
            if problems
            else "no result.json files"
        )
        raise FileNotFoundError(f"nothing to report under {directory}: {found}")
    out = Path(out) if out is not None else directory / "report"
    out.mkdir(parents=True, exist_ok=True)
    tables = build_tables(runs, fractions)
    header = provenance_header(directory, runs, problems, command)
    sections = []
    for t in tables:
        images = write_plots(t, out) if plots else {}
        section = render_table_markdown(t, images, directory)
        (out / f"{t.slug}.md").write_text(header + "\n" + section)
        write_csvs(t, out)
        sections.append(section)
    board = build_leaderboard(tables, references)
    write_leaderboard(board, out, plots)
    markdown = (  # the per-table sections, then the verdict across them (as the terminal prints them)
        header
        + "\n"
        + "\n".join(sections)
        + "\n"
        + render_leaderboard(board)
        + ("\n" + render_problems(problems, directory) if problems else "")
    )
    (out / "report.md").write_text(markdown)
    print_tables(tables, problems, console)
    print_leaderboard(board, console)
    log_wandb(tables, wandb_mode, out, directory)
    return markdown


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sema-report",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "directory", type=Path, help="a run or sweep directory; every result.json below it is read"
    )
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: DIRECTORY/report)")
    parser.add_argument(
        "--fractions",
        type=float,
        nargs="+",
        default=list(DEFAULT_FRACTIONS),
        help="epochs-to-target fractions of the way to the baseline's final value, in (0, 1]",
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--reference", nargs="+", default=["baseline", "ema"], metavar="METHOD",
                        help="the leaderboard's reference methods; the first sets verdicts, scores and step ratios "
                             "(default: baseline ema)")
    parser.add_argument(
        "--wandb-mode",
        choices=WANDB_MODES,
        default="disabled",
        help="also log the tables as wandb.Table (offline needs no network)",
    )
    args = parser.parse_args(argv)
    command = "sema-report " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        summarize(
            args.directory,
            args.out,
            fractions=args.fractions,
            plots=not args.no_plots,
            wandb_mode=args.wandb_mode,
            command=command,
            references=args.reference,
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"sema-report: {err}", file=sys.stderr)
        return 1
    out = args.out or args.directory / "report"
    print(f"report written to {out}/ (report.md, one .md/.csv/.png set per table)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
