"""The main job: every task of the suite x its methods at one profile, then the comparison and the leaderboard.

    sema-bench                                         # = python -m benchmarks.suite (quick profile, seed 0)
    python -m benchmarks.suite --profile smoke --seeds 0 1 --out-dir /tmp/runs
    python -m benchmarks.suite --jobs 1 --no-share     # one run at a time, each method trained on its own
    python -m benchmarks.suite --suite cpu --out-dir runs/cpu   # the CPU reproduction: every method, 3-5 seeds

Runs go to the same directories as `sema-bench recipe=<profile>/<task> method=...` would use
(`<out_dir>/<profile>/<task>/<method>/seed<seed>/`), so rerunning the suite skips completed runs and resumes
interrupted ones. A failed run is recorded (result.json status "failed") and the suite goes on. At the end,
`benchmarks.report.summarize` prints the comparison tables and the leaderboard and writes
`<out_dir>/<profile>/report/`.

How the work is laid out:
* **shared trajectories** (benchmarks/riders.py): a task's passive methods (baseline, EMA, ... : writes_model
  False) train once per seed, the others riding on the first one's run; each still gets its own run directory and
  result.json, equal bit for bit to a run of its own. SEMA (it writes into the model) trains on its own.
* **side by side**: `--jobs N` work units (a shared group or a single run) run in N processes at once, each with
  cores / N torch threads (default N = the cores this process may use, at most 2: on 2 cores, two one-thread
  runs). The heaviest tasks start first.
The job prints each task's wall time and the training the shared trajectories saved.

A task joins the suite with one line in `SUITE` (once its recipes configs/recipe/<profile>/<task>.yaml exist).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from omegaconf import OmegaConf

from benchmarks.recipes import compose_run, standard
from benchmarks.workers import threads_per_worker, usable_cores, worker_pool

# (task, methods), heaviest first (the quick profile's training times on 2 cores), so that side-by-side workers
# finish together. One line per task.
SUITE: list[tuple[str, tuple[str, ...]]] = [
    ("detection", ("baseline", "ema", "sema")),
    ("ssl", ("baseline", "ema", "sema")),
    ("video", ("baseline", "ema", "sema")),
    ("segmentation", ("baseline", "ema", "sema")),
    ("generation", ("baseline", "ema", "sema")),
    ("regression", ("baseline", "ema", "sema")),
    ("lm", ("baseline", "ema", "sema")),
    ("classification", ("baseline", "ema", "sema")),
]
MAX_DEFAULT_JOBS = 2  # side-by-side runs by default (more cores: more threads per run instead)
# The CPU reproduction (`--suite cpu`; its report is results/cpu/): every task x every compared method at the quick
# profile, plus the official presets on the tasks where they act differently from `sema`: sema_openmixup leaves
# BatchNorm statistics alone, which matters where the model has them; sema_mmdet is the detection hook's variant.
# 3 seeds, 5 on the tasks whose quick runs take under a minute on 2 cores.
CPU_METHODS = ("baseline", "ema", "sema", "swa", "lawa", "bema", "power_ema", "lookahead", "sema_blend")
CPU_PRESETS: dict[str, tuple[str, ...]] = {"classification": ("sema_openmixup",), "regression": ("sema_openmixup",),
                                           "ssl": ("sema_openmixup",), "segmentation": ("sema_openmixup",),
                                           "detection": ("sema_mmdet",)}
CPU_SEEDS = (0, 1, 2)
CPU_FAST_SEEDS = (0, 1, 2, 3, 4)
# Under a minute per single-method quick run in the suite's seed 0 (2 side by side on 2 cores, 1 thread each: 44-57 s;
# regression 56-65 s, ssl 74-82 s, video 84-99 s, detection 113-148 s).
CPU_FAST_TASKS = ("classification", "generation", "lm", "segmentation")
SUITES = ("main", "cpu")


@dataclass(frozen=True)
class Unit:
    """One piece of the suite's work: the methods that train on one trajectory (one method unless shared)."""

    task: str
    methods: tuple[str, ...]
    seed: int


def plan_units(chosen: Sequence[tuple[str, Sequence[str], Sequence[int]]], share: bool) -> list[Unit]:
    """Per (task, methods, seeds) and seed: the passive methods as one shared unit (when `share`), every other
    method alone. All the shared units come first, in task order (heaviest first), then the others: side-by-side
    workers start on different tasks, and a task's second unit finds the caches (datasets, FID proxy) its first one
    made."""
    passive = {m: share and _passive(m) for _, methods, _ in chosen for m in methods}
    first, then = [], []
    for task, methods, seeds in chosen:
        for seed in seeds:
            group = tuple(m for m in methods if passive[m])
            if len(group) > 1:
                first.append(Unit(task, group, seed))
            then += [Unit(task, (m,), seed) for m in methods if m not in group or len(group) == 1]
    return first + then


def _passive(method: str) -> bool:
    """Whether `method` never writes into the model (its class's writes_model; the baseline has no class)."""
    from benchmarks.recipes import compose
    from benchmarks.riders import is_passive

    cfg, _ = compose([f"method={method}"])
    return is_passive(cfg.method)


def run_unit(unit: Unit, profile: str, out_dir: str, extra: Sequence[str], progress=None) -> list[dict]:
    """Compose and run one unit (shared or single); returns its runs' results (a failed run included)."""
    from benchmarks import engine

    members = []
    for method in unit.methods:
        cfg, run_dir = compose_run(standard(unit.task, profile), method, unit.seed, out_dir, extra)
        (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
        members.append((cfg, run_dir))
    if len(members) > 1:
        return engine.run_shared(members, progress=progress)
    try:
        return [engine.run(*members[0], progress=progress)]
    except Exception as err:  # recorded in result.json by the engine; the suite goes on
        return [{"task": unit.task, "method": unit.methods[0], "seed": unit.seed, "status": "failed",
                 "error": str(err)}]


def _run_unit_in_worker(args: tuple) -> tuple[Unit, list[dict], float]:
    """A worker process's unit: its own logging, the results reduced to what the parent prints."""
    unit, profile, out_dir, extra, parent = args
    if os.getppid() != parent:  # the suite is gone: do not start a unit nobody waits for
        raise RuntimeError(f"the suite's process {parent} is gone; {unit.task}/{'+'.join(unit.methods)} not started")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    start = time.perf_counter()
    results = run_unit(unit, profile, out_dir, extra)
    keep = ("task", "method", "seed", "status", "final", "headline", "wall_time_s", "trajectory", "error")
    return unit, [{k: r.get(k) for k in keep} for r in results], time.perf_counter() - start


def suite_plan(suite: str, tasks: Optional[Sequence[str]] = None,
               seeds: Optional[Sequence[int]] = None) -> list[tuple[str, tuple[str, ...], tuple[int, ...]]]:
    """(task, methods, seeds) of a suite: "main" (SUITE, seed 0) or "cpu" (CPU_METHODS + CPU_PRESETS, CPU_SEEDS or
    CPU_FAST_SEEDS); `seeds` replaces the suite's own, `tasks` keeps only those."""
    if suite not in SUITES:
        raise ValueError(f"suite {suite!r} is not a suite; choose one of: {', '.join(SUITES)}")
    unknown = set(tasks or ()) - {t for t, _ in SUITE}
    if unknown:
        raise ValueError(f"tasks {sorted(unknown)} are not in the suite; choose from: {', '.join(t for t, _ in SUITE)}")
    plan = []
    for task, methods in SUITE:
        if tasks is not None and task not in tasks:
            continue
        if suite == "cpu":
            methods = (*CPU_METHODS, *CPU_PRESETS.get(task, ()))
            own = CPU_FAST_SEEDS if task in CPU_FAST_TASKS else CPU_SEEDS
        else:
            own = (0,)
        plan.append((task, tuple(methods), tuple(seeds) if seeds else own))
    return plan


def estimate_text(units: Sequence[Unit], jobs: int, out_dir: str, profile: str) -> str:
    """What the job will cost, stated before it starts: its units and runs, how many are done already (every run
    completed: they are skipped), and a duration estimate for the rest: each at the slowest finished unit of its
    task under `out_dir` (of any task when its own has none)."""
    import json

    def status_and_time(unit: Unit, method: str) -> tuple[Optional[str], Optional[float]]:
        path = Path(out_dir) / profile / unit.task / method / f"seed{unit.seed}" / "result.json"
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError):
            return None, None
        return result.get("status"), float(result.get("wall_time_s") or 0) or None

    runs = sum(len(u.methods) for u in units)
    done = [u for u in units if all(status_and_time(u, m)[0] == "completed" for m in u.methods)]
    per_task: dict[str, float] = {}
    for unit in done:
        seconds = status_and_time(unit, unit.methods[0])[1]
        if seconds:
            per_task[unit.task] = max(per_task.get(unit.task, 0.0), seconds)
    text = f"{len(units)} work units ({runs} runs) on {jobs} process(es), {len(done)} of them done already"
    todo = [u for u in units if u not in done]
    if per_task and todo:
        fallback = max(per_task.values())
        guess = sum(per_task.get(u.task, fallback) for u in todo) / jobs  # not a partial run's time so far
        text += (f"; about {guess / 60:.0f} min for the other {len(todo)} if each takes as long as its task's "
                 "finished units did (shared units with more riders take longer: more evaluations)")
    return text


def default_jobs() -> int:
    return max(1, min(usable_cores(), MAX_DEFAULT_JOBS))


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


def run_suite(profile: str = "quick", seeds: Optional[Sequence[int]] = None, out_dir: str = "runs",
              tasks: Optional[Sequence[str]] = None, extra: Sequence[str] = (), console=None,
              jobs: Optional[int] = None, share: bool = True, suite: str = "main") -> list[dict]:
    """Run a suite ("main" or "cpu", see suite_plan; `seeds` replaces its seeds); returns the result dicts (failed
    runs included). Prints the comparison tables, the leaderboard, each task's wall time and what the shared
    trajectories saved."""
    from rich.console import Console

    console = console or Console()
    chosen = suite_plan(suite, tasks, seeds)
    jobs = default_jobs() if jobs is None else jobs
    if jobs < 1:
        raise ValueError(f"--jobs {jobs}: at least 1")
    units = plan_units(chosen, share)
    if jobs > 1 and not any(e.startswith("trainer.num_threads=") for e in extra):
        extra = [*extra, f"trainer.num_threads={threads_per_worker(jobs)}"]  # the workers share the cores
    console.print(f"the {suite} suite: " + estimate_text(units, jobs, out_dir, profile), highlight=False)
    results, unit_times, start = [], {}, time.perf_counter()
    if jobs == 1:
        with RichProgress(console) as progress:
            for unit in units:
                t0 = time.perf_counter()
                results += run_unit(unit, profile, out_dir, extra, progress)
                unit_times[unit] = time.perf_counter() - t0
    else:
        from concurrent.futures import as_completed

        with worker_pool(jobs) as pool:  # spawned; they record this code version and stop if this process dies
            futures = {pool.submit(_run_unit_in_worker, (u, profile, out_dir, list(extra), os.getpid())): u
                       for u in units}
            for n, future in enumerate(as_completed(futures), 1):
                try:
                    unit, unit_results, took = future.result()
                except BaseException as err:  # noqa: BLE001 - one unit's error must not discard the others
                    unit, took = futures[future], 0.0
                    unit_results = [{"task": unit.task, "method": m, "seed": unit.seed, "status": "failed",
                                     "error": f"{type(err).__name__}: {err}"} for m in unit.methods]
                unit_times[unit] = took
                results += unit_results
                for r in unit_results:
                    final, head = r.get("final") or {}, r.get("headline")
                    score = f"{head} {final[head]:.4g}" if head in final else ""
                    console.print(f"[{n}/{len(units)}] {unit.task}/{r['method']}/seed{unit.seed}: {r['status']} "
                                  f"{score} ({took:.0f} s for the unit)", highlight=False)
    total = time.perf_counter() - start
    root = Path(out_dir) / profile
    console.print(f"\nsuite finished in {total:.0f} s ({jobs} process(es)); runs under {root.resolve()}")
    _print_times(units, unit_times, results, console)
    _print_table(root, console)
    return results


def _print_times(units: Sequence[Unit], unit_times: dict, results: Sequence[dict], console) -> None:
    """Wall time per task (its units' seconds, summed over processes) and the training the riders saved."""
    per_task: dict[str, float] = {}
    for unit in units:
        per_task[unit.task] = per_task.get(unit.task, 0.0) + unit_times.get(unit, 0.0)
    console.print("time per task (s, summed over its units): " + ", ".join(f"{t} {s:.0f}" for t, s in
                                                                          per_task.items()), highlight=False)
    riders = [r for r in results if (r.get("trajectory") or {}).get("trained_in") and r.get("status") == "completed"]
    saved = sum(float(r.get("wall_time_s") or 0.0) for r in riders)
    console.print(f"shared trajectories: {len(riders)} run(s) rode on another run's training, saving about "
                  f"{saved:.0f} s of training (their trajectories' wall time)", highlight=False)


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
    parser.add_argument("--suite", default="main", choices=SUITES,
                        help="main: every task x baseline, ema, sema, seed 0 (the main job); cpu: the CPU "
                             f"reproduction, every task x {', '.join(CPU_METHODS)} (+ the official presets where "
                             f"they differ) x seeds {' '.join(map(str, CPU_SEEDS))} (0-4 on "
                             f"{', '.join(CPU_FAST_TASKS)}); states its size first")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="seeds to run instead of the suite's own")
    parser.add_argument("--out-dir", default="runs", help="root of the run directories (default: runs)")
    parser.add_argument("--tasks", nargs="+", default=None, help="only these tasks of the suite")
    parser.add_argument("--jobs", type=int, default=None,
                        help=f"work units side by side (default: the usable cores, at most {MAX_DEFAULT_JOBS})")
    parser.add_argument("--no-share", action="store_true",
                        help="train every method on its own (no shared trajectories)")
    parser.add_argument("overrides", nargs="*", help="extra config overrides for every run (key=value)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    out_dir = str(Path(args.out_dir).expanduser().absolute())  # the run directories, whatever the cwd later
    results = run_suite(args.profile, args.seeds, out_dir, args.tasks, args.overrides, jobs=args.jobs,
                        share=not args.no_share, suite=args.suite)
    failed = [r for r in results if r["status"] == "failed"]
    if failed:
        raise SystemExit(f"{len(failed)} of {len(results)} runs failed (see their result.json)")


if __name__ == "__main__":
    main()
