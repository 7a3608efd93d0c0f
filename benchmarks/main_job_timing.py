"""Benchmark: the main job's wall time as it runs (shared trajectories, side-by-side units) against the same job
one run at a time with every method trained on its own, measured in the same call on the same machine.

    python -m benchmarks.main_job_timing                       # the quick suite twice, fresh directories
    python -m benchmarks.main_job_timing --tasks classification lm --profile smoke

Prints both wall times and their ratio (a benchmark, not a test: nothing is asserted). Each mode runs in a fresh
temporary directory, so neither skips runs the other finished. The shared mode runs first and so pays for the
caches both use (generated datasets, the FID proxy classifier): the ratio errs on the low side.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Optional, Sequence


def timed(profile: str, tasks: Optional[Sequence[str]], jobs: Optional[int], share: bool,
          extra: Sequence[str]) -> float:
    from benchmarks.suite import run_suite

    with tempfile.TemporaryDirectory(prefix="main_job_timing_") as out_dir:
        start = time.perf_counter()
        run_suite(profile, (0,), out_dir, tasks, extra, jobs=jobs, share=share)
        return time.perf_counter() - start


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--tasks", nargs="+", default=None)
    parser.add_argument("overrides", nargs="*", help="extra config overrides for every run")
    args = parser.parse_args(argv)
    extra = ["logger.wandb.mode=disabled", *args.overrides]
    shared = timed(args.profile, args.tasks, None, True, extra)
    sequential = timed(args.profile, args.tasks, 1, False, extra)
    print(f"\nmain job, profile {args.profile}: one run at a time, no sharing {sequential:.0f} s; "
          f"shared trajectories, side by side {shared:.0f} s; ratio {sequential / shared:.2f}x")


if __name__ == "__main__":
    main()
