"""The main job: every task of the suite x its methods at one profile, then the comparison table.

    sema-bench                                         # = python -m benchmarks.suite (quick profile, seed 0)
    python -m benchmarks.suite --profile smoke --seeds 0 1 --out-dir /tmp/runs

Runs go to the same directories as `sema-bench recipe=<profile>/<task> method=...` would use
(`<out_dir>/<profile>/<task>/<method>/seed<seed>/`), so rerunning the suite skips completed runs and resumes
interrupted ones. A failed run is recorded (result.json status "failed") and the suite goes on. At the end,
`benchmarks.report.summarize` prints the comparison table and writes `<out_dir>/<profile>/report/`.

A task joins the suite with one line in `SUITE` (once its recipes configs/recipe/<profile>/<task>.yaml exist).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Optional, Sequence

from omegaconf import OmegaConf

from benchmarks.recipes import compose_run, standard

# (task, methods) in the order they run. One line per task.
SUITE: list[tuple[str, tuple[str, ...]]] = [
    ("classification", ("baseline", "ema", "sema")),
    ("segmentation", ("baseline", "ema", "sema")),
    ("detection", ("baseline", "ema", "sema")),
    ("generation", ("baseline", "ema", "sema")),
    ("lm", ("baseline", "ema", "sema")),
    ("ssl", ("baseline", "ema", "sema")),
    ("regression", ("baseline", "ema", "sema")),
    ("video", ("baseline", "ema", "sema")),
]


class RichProgress:
    """Progress bars (rich): one bar per run, advancing per step, with the last epoch's metrics."""

    def __init__(self, console=None):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console or Console()
        self.bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), TextColumn("{task.fields[metrics]}"), console=self.console)
        self.task_id = None

    def __enter__(self):
        self.bars.start()
        return self

    def __exit__(self, *exc):
        self.bars.stop()

    def start(self, name, epochs, steps_per_epoch, done_epochs):
        self.name, self.steps_per_epoch = name, steps_per_epoch
        self.task_id = self.bars.add_task(name, total=epochs * steps_per_epoch,
                                          completed=done_epochs * steps_per_epoch, metrics="")

    def step(self, steps):
        self.bars.advance(self.task_id, steps)

    def epoch(self, record):
        # Short: the loss and the first metric of each evaluated weight set (the full line is in log.jsonl).
        parts = [f"epoch {record['epoch']}", f"loss {record['train_loss']:.3f}"]
        for key in ("avg", "online"):
            if record.get(key):
                name, value = next(iter(record[key].items()))
                parts.append(f"{key} {name} {value:.4g}")
        self.bars.update(self.task_id, completed=record["epoch"] * self.steps_per_epoch, metrics=", ".join(parts))

    def end(self, result):
        status = result["status"]
        final = result.get("final") or {}
        headline = result.get("headline")
        score = f"{headline} {final[headline]:.4g}" if headline in final else ""
        if self.task_id is None:  # skipped or failed before training started
            name = f"{result['task']}/{result['method']}/seed{result['seed']}"
            self.console.print(f"{name}: {status} {score}")
        else:
            self.bars.update(self.task_id, description=f"{self.name} [{status}] {score}")
        self.task_id = None


def run_suite(profile: str = "quick", seeds: Sequence[int] = (0,), out_dir: str = "runs",
              tasks: Optional[Sequence[str]] = None, extra: Sequence[str] = (), console=None) -> list[dict]:
    """Run the suite; returns the result dicts (failed runs included). Prints the comparison table at the end."""
    from rich.console import Console

    from benchmarks import engine

    console = console or Console()
    chosen = [(t, m) for t, m in SUITE if tasks is None or t in tasks]
    unknown = set(tasks or ()) - {t for t, _ in SUITE}
    if unknown:
        raise ValueError(f"tasks {sorted(unknown)} are not in the suite; choose from: {', '.join(t for t, _ in SUITE)}")
    results, start = [], time.perf_counter()
    with RichProgress(console) as progress:
        for task, methods in chosen:
            for method in methods:
                for seed in seeds:
                    cfg, run_dir = compose_run(standard(task, profile), method, seed, out_dir, extra)
                    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
                    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
                    try:
                        results.append(engine.run(cfg, run_dir, progress=progress))
                    except Exception as err:  # recorded in result.json by the engine; the suite goes on
                        results.append({"task": task, "method": method, "seed": seed, "status": "failed",
                                        "error": str(err)})
    root = Path(out_dir) / profile
    console.print(f"\nsuite finished in {time.perf_counter() - start:.0f} s; runs under {root.resolve()}")
    _print_table(root, console)
    return results


def _print_table(root: Path, console) -> None:
    try:
        from benchmarks.report import summarize
    except ImportError:
        console.print(f"(benchmarks.report is not available: run `sema-report {root}` once it is installed)")
        return
    summarize(root, console=console)
    console.print(f"report files: {(root / 'report').resolve()}")


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="quick", help="smoke | quick | paper (default: quick)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds to run (default: 0)")
    parser.add_argument("--out-dir", default="runs", help="root of the run directories (default: runs)")
    parser.add_argument("--tasks", nargs="+", default=None, help="only these tasks of the suite")
    parser.add_argument("overrides", nargs="*", help="extra config overrides for every run (key=value)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    out_dir = str(Path(args.out_dir).expanduser().absolute())  # the run directories, whatever the cwd later
    results = run_suite(args.profile, args.seeds, out_dir, args.tasks, args.overrides)
    failed = [r for r in results if r["status"] == "failed"]
    if failed:
        raise SystemExit(f"{len(failed)} of {len(results)} runs failed (see their result.json)")


if __name__ == "__main__":
    main()
