"""`python -m benchmarks.publish RUNS RESULTS`: a sweep's report for results/, made from per-run summaries that are
committed beside it, so anyone can check the tables against the runs they came from.

    python -m benchmarks.suite --suite cpu --out-dir runs/cpu        # the runs (resumable)
    python -m benchmarks.publish runs/cpu/quick results/cpu          # results/cpu/runs/ + results/cpu/*.md, .csv, .png
    python -m benchmarks.publish runs/cpu/quick results/cpu --readme README.md   # also the README's summary block

1. Every completed run's result.json under RUNS (and its analysis.json, when sema-analyze wrote one) is copied to
   `RESULTS/runs/<its path under RUNS>/`; runs not completed (running, failed) are left out and counted, and an
   older copy of such a run is withdrawn. Copies of runs no longer under RUNS at all are kept, so a sweep finished
   over several sittings (or machines) accumulates.
2. The tables, CSVs and plots in RESULTS are deleted and rewritten: a table whose runs are gone does not linger.
3. `sema-report RESULTS/runs --out RESULTS` (benchmarks.report.summarize) writes the tables, the leaderboard and
   the plots from those copies, with the command, commits, machines and date in each file's header.

4. With `--readme`, the README's summary block for RESULTS (between its markers; benchmarks/report/readme.py) is
   rewritten from the same copies.

tests/test_published_results.py regenerates every published report and README block from its runs/ and checks
they agree.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

RUNS_DIR = "runs"  # inside a published results folder: the per-run summaries the tables are made from


def snapshot(runs: Path, results: Path) -> tuple[int, int]:
    """Copy the completed runs' result.json (and analysis.json) under `runs` to `results/runs/`; returns (copied,
    skipped as not completed)."""
    from benchmarks.results import read_result, write_json_atomic

    copied = skipped = 0
    for path in sorted(Path(runs).rglob("result.json")):
        run_dir = path.parent
        if RUNS_DIR in run_dir.relative_to(runs).parts[:1] or "report" in run_dir.relative_to(runs).parts:
            continue
        result = read_result(run_dir)
        target = results / RUNS_DIR / run_dir.relative_to(runs)
        if result is None or result.get("status") != "completed":
            skipped += 1
            for name in ("result.json", "analysis.json"):  # an older copy would outlive the run it came from
                (target / name).unlink(missing_ok=True)
            continue
        write_json_atomic(target / "result.json", result)
        analysis = run_dir / "analysis.json"
        if analysis.is_file():
            write_json_atomic(target / "analysis.json", json.loads(analysis.read_text()))
        copied += 1
    return copied, skipped


def publish(runs: Path, results: Path, command: str, plots: bool = True) -> str:
    """snapshot(), then the report of results/runs/ into results/; returns the report's markdown."""
    from benchmarks.report import summarize

    runs, results = Path(runs), Path(results)
    if not runs.is_dir():
        raise FileNotFoundError(f"{runs} is not a directory: pass the profile folder of a sweep (e.g. runs/cpu/quick)")
    copied, skipped = snapshot(runs, results)
    print(f"{copied} completed run(s) copied to {results / RUNS_DIR}; {skipped} not completed, left out")
    for stale in [*results.glob("*.md"), *results.glob("*.csv"), *results.glob("*.png")]:
        stale.unlink()  # every table is rewritten below; one whose runs are gone must not linger
    return summarize(results / RUNS_DIR, results, plots=plots, command=command)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, help="a sweep's profile folder, e.g. runs/cpu/quick")
    parser.add_argument("results", type=Path, help="the published folder, e.g. results/cpu")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--readme", type=Path, default=None,
                        help="also rewrite this README's summary block for RESULTS (it must hold the block's markers)")
    args = parser.parse_args(argv)
    command = "python -m benchmarks.publish " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        publish(args.runs, args.results, command, plots=not args.no_plots)
        if args.readme is not None:
            from benchmarks.report.readme import block_of, rewrite

            folder = os.path.relpath(args.results.resolve(), args.readme.resolve().parent)  # results/cpu
            rewrite(args.readme, block_of(args.results / RUNS_DIR, folder), folder)
            print(f"{args.readme}: the {folder} summary rewritten")
    except (FileNotFoundError, ValueError) as err:
        print(f"publish: {err}", file=sys.stderr)
        return 1
    print(f"published to {args.results}/ (report.md, one .md/.csv/.png set per table, runs/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
