"""`python -m benchmarks.studies NAME`: small sweeps that ask where SEMA helps, each with its report section.

    python -m benchmarks.studies --list
    python -m benchmarks.studies length --out-dir runs/studies          # resumable; then its report section
    python -m benchmarks.studies length --jobs 2                         # two units side by side (2 cores)
    python -m benchmarks.studies length --report-only                   # the section from the finished runs
    python -m benchmarks.studies --jobs 2 --publish results/studies     # every study, then results/studies/
    python -m benchmarks.studies schedule --seeds 3 4 --jobs 2          # more seeds where the runs are gone ...
    python -m benchmarks.studies --publish results/studies --report-only   # ... then add them to results/studies/

A study varies one thing of one cheap recipe (quick classification: Fashion-MNIST, the small CNN) and runs
baseline, EMA and SEMA at every value: 5 seeds (FAST_SEEDS) where a run takes under a minute, 3 (SEEDS) for the
length study's long runs, as the cpu suite chooses. Its section has, per value, each method's reported metric
(mean +- std over seeds) and the paired differences SEMA - baseline and EMA - baseline with 95% t intervals (pairs
are seeds), then a conclusion in plain words, written from those intervals: where the difference is significant,
its sign, and how it moves along the study's axis. Runs land where `sema-bench` puts them
(`<out-dir>/<name>/<recipe>/<method>/seed<s>/<overrides>`), so a rerun skips finished runs and resumes the others;
EMA rides on the baseline's trajectory (benchmarks/riders.py).

The studies (STUDIES):
    length    trainer.epochs 8 -> 128 at the recipe's per-step dynamics (decay, switch every epoch, cosine over
              the run): does SEMA's deficit of short runs shrink once the baseline has plateaued?
    schedule  constant lr, cosine to half the peak, cosine to zero (8 epochs)
    horizon   the averaging horizon as a fraction of the run: decay 0.9 / 0.99 / 0.999 x SEMA switching every
              1 / 2 / 4 epochs
    bn        BatchNorm statistics of the average: averaged (the paper), copied from the model, the model's own
              (openmixup's parameters-only hooks), or recomputed on 50 training batches before each evaluation (SWA's
              way; with SEMA the recomputed statistics stay in the average, and its EMA updates and switches carry
              them on)
The reported statistic (final, best, median of the last k evaluations) needs no runs of its own: every result.json
holds all three, and `statistic_section(root)` compares them on any set of runs (`--statistic-of runs/cpu/quick`).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Sequence

RECIPE = "quick/classification"
METHODS = ("baseline", "ema", "sema")
SEEDS = (0, 1, 2)  # a study whose runs take minutes (length: up to 128 epochs, 11 min a run on 2 cores)
FAST_SEEDS = (0, 1, 2, 3, 4)  # the 8-epoch studies: a run takes under a minute (the cpu suite's rule: 5 seeds)


@dataclass(frozen=True)
class Point:
    """One value on a study's axis: its label and the overrides it applies (to every method, unless `methods`)."""

    label: str
    overrides: tuple[str, ...]
    methods: tuple[str, ...] = METHODS


@dataclass(frozen=True)
class Study:
    name: str
    question: str  # what the study asks, in plain words (the section's first line)
    axis: str  # what varies, for the table's first column
    points: tuple[Point, ...]
    recipe: str = RECIPE
    seeds: tuple[int, ...] = FAST_SEEDS  # its published seeds (--seeds replaces them for one command)


def _horizon_points() -> tuple[Point, ...]:
    points = []
    for decay in (0.9, 0.99, 0.999):
        points.append(Point(f"decay {decay}, EMA", (f"method.decay={decay}",), ("baseline", "ema")))
        for every in (1, 2, 4):
            points.append(Point(f"decay {decay}, SEMA every {every}", (f"method.decay={decay}",
                                                                         f"method.switch_every={every}"),
                                ("baseline", "sema")))
    return tuple(points)


STUDIES: dict[str, Study] = {
    "length": Study(
        "length", "Does SEMA's gap to the baseline change as the run grows, until the baseline has plateaued?",
        "epochs", tuple(Point(f"{e} epochs", (f"trainer.epochs={e}",)) for e in (8, 16, 32, 64, 128)), seeds=SEEDS),
    "schedule": Study(
        "schedule", "Does the learning-rate schedule decide whether averaging helps?", "schedule",
        (Point("constant", ("optim.schedule=constant",)),
         Point("cosine to half the peak", ("optim.schedule=cosine", "optim.min_lr=0.025")),  # the recipe's lr: 0.05
         Point("cosine to zero", ("optim.schedule=cosine", "optim.min_lr=0.0")))),
    "horizon": Study(
        "horizon", "How far back should the average reach, and how often should SEMA switch?",
        "decay and switch cadence", _horizon_points()),
    "bn": Study(
        "bn", "Which BatchNorm statistics should the average be evaluated with?", "BatchNorm statistics",
        (Point("averaged (paper)", ("method.buffers=average",), ("baseline", "ema", "sema")),
         Point("copied from the model", ("method.buffers=copy",), ("baseline", "ema", "sema")),
         Point("the model's own (openmixup)", ("method.buffers=ignore",), ("baseline", "ema", "sema")),
         Point("recomputed on 50 training batches", ("method.buffers=average", "method.bn_update_batches=50"),
               ("baseline", "ema", "sema")))),
}


def runs_of(study: Study, seeds: Sequence[int], out_dir: str) -> list[tuple[Point, int, list]]:
    """Per point and seed, the (config, run directory) of its methods."""
    from benchmarks.recipes import compose_run

    plan = []
    for point in study.points:
        for seed in seeds:
            members = []
            for method in point.methods:
                # the baseline averages nothing: without the method's keys its runs are shared by the points
                extra = [o for o in point.overrides if method != "baseline" or not o.startswith("method.")]
                members.append(compose_run(study.recipe, method, seed, str(Path(out_dir) / study.name), extra))
            plan.append((point, seed, members))
    return plan


def work_units(study: Study, seeds: Sequence[int], out_dir: str) -> list[tuple[int, list, list]]:
    """(seed, passive runs sharing one trajectory, other runs): the passive methods of one seed whose configs agree
    but for the method ride together, each method once per trajectory; a run that several points share appears
    once."""
    import json

    from omegaconf import OmegaConf

    from benchmarks.riders import MAY_DIFFER, is_passive

    def trajectory(cfg) -> str:
        config = OmegaConf.to_container(cfg, resolve=True)
        return json.dumps({k: v for k, v in config.items() if k not in MAY_DIFFER}, sort_keys=True, default=str)

    groups: dict[tuple, dict[Path, tuple]] = {}
    for _, seed, members in runs_of(study, seeds, out_dir):
        for cfg, run_dir in members:
            groups.setdefault((seed, trajectory(cfg)), {})[run_dir] = (cfg, run_dir)
    units = []
    for (seed, _), runs in groups.items():
        passive = [r for r in runs.values() if is_passive(r[0].method)]
        active = [r for r in runs.values() if not is_passive(r[0].method)]
        # a trajectory carries each method once (riders are known by name): the k-th variant of each passive
        # method rides with the k-th of the others; a variant left alone trains its own (identical) trajectory
        rounds: list[list] = []
        for run in passive:
            name = str(run[0].method.name)
            slot = next((r for r in rounds if name not in {str(c.method.name) for c, _ in r}), None)
            if slot is None:
                rounds.append(slot := [])
            slot.append(run)
        units += [(seed, group, []) for group in rounds[:-1]] + [(seed, rounds[-1] if rounds else [], active)]
    return units


def _units(study: Study, seeds: Sequence[int], out_dir: str) -> list[tuple[int, list, list]]:
    """work_units() with each active run a unit of its own (they share no training), the longest training first
    (side-by-side workers then finish together)."""
    def epochs(unit: tuple) -> int:
        return max((int(cfg.trainer.epochs) for cfg, _ in unit[1] + unit[2]), default=0)

    units = []
    for seed, passive, active in work_units(study, seeds, out_dir):
        units += ([(seed, passive, [])] if passive else []) + [(seed, [], [run]) for run in active]
    return sorted(units, key=lambda u: -epochs(u))


def _train_in_worker(args: tuple) -> list[str]:
    """A worker's unit: the configs are composed again here (structured configs do not pickle), then trained."""
    study, seeds, out_dir, index, threads = args
    seed, passive, active = _units(study, seeds, out_dir)[index]
    return _train_unit((seed, passive, active, threads, study.name))


def _train_unit(args: tuple) -> list[str]:
    """One work unit (benchmarks.riders: the passive runs on one trajectory, then the others alone), each run with
    `threads` torch threads (None: the config's); returns the lines to print."""
    seed, passive, active, threads, name = args
    from omegaconf import OmegaConf

    from benchmarks import engine

    for cfg, run_dir in passive + active:
        if threads is not None:
            cfg.trainer.num_threads = threads  # IGNORED_FOR_RESUME: the run directory and its resume do not see it
        (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    lines = [f"{name}, seed {seed}: {len(passive)} passive run(s) on one trajectory, {len(active)} alone"]
    singles = active
    if len(passive) > 1:
        engine.run_shared(passive)
    else:
        singles = passive + active
    for cfg, run_dir in singles:
        try:
            engine.run(cfg, run_dir)
        except Exception as err:  # recorded in its result.json; the study goes on
            lines.append(f"  {cfg.method.name} in {run_dir} failed: {err}")
    return lines


def run_study(study: Study, seeds: Sequence[int], out_dir: str, jobs: int = 1) -> None:
    """Train (or resume, or skip) every run of the study, in `work_units` (shared trajectories, then SEMA runs),
    the longest first; `jobs` > 1 runs that many units side by side in worker processes, cores / jobs threads
    each (as the suite's --jobs)."""
    units = _units(study, seeds, out_dir)
    if jobs <= 1:
        for seed, passive, active in units:
            print("\n".join(_train_unit((seed, passive, active, None, study.name))), flush=True)
        return
    from concurrent.futures import as_completed

    from benchmarks.workers import threads_per_worker, worker_pool

    with worker_pool(jobs) as pool:  # spawned; they record this code version and stop if this process dies
        futures = [pool.submit(_train_in_worker, (study, list(seeds), out_dir, i, threads_per_worker(jobs)))
                   for i in range(len(units))]
        for n, future in enumerate(as_completed(futures), 1):
            try:
                lines = future.result()
            except BaseException as err:  # noqa: BLE001 - one unit's error must not discard the others
                lines = [f"a unit of {study.name} failed: {type(err).__name__}: {err}"]
            print(f"[{n}/{len(units)}] " + "\n".join(lines), flush=True)


def _reported(run_dir: Path) -> Optional[tuple[float, str, bool]]:
    """(reported value, metric name, higher is better) of a completed run, or None."""
    from benchmarks.results import read_result

    result = read_result(run_dir)
    if result is None or result.get("status") != "completed":
        return None
    head = result["headline"]
    statistic = (result.get("config") or {}).get("trainer", {}).get("reported", "final")
    value = (result.get(statistic) or {}).get(head)
    return (None if value is None else float(value)), head, bool(result.get("higher_is_better", True))


def study_section(study: Study, seeds: Sequence[int], out_dir: str) -> str:
    """The study's markdown section: a table per point and the conclusion in plain words."""
    from benchmarks.report.formatting import diff_text, mean_std_text
    from benchmarks.stats import mean_std, paired_difference

    rows, findings, missing = [], [], 0
    metric, higher = "metric", True
    for point in study.points:
        values: dict[str, dict[int, float]] = {m: {} for m in point.methods}
        for p, seed, members in runs_of(study, seeds, out_dir):
            if p != point:
                continue
            for cfg, run_dir in members:
                got = _reported(run_dir)
                if got is not None and got[0] is not None and math.isfinite(got[0]):
                    values[cfg.method.name][seed] = got[0]
                    metric, higher = got[1], got[2]
                else:  # not run yet, failed, or a non-finite metric: counted and said below the table
                    missing += 1
        base = values.get("baseline", {})
        cells = [point.label, mean_std_text(mean_std(list(base.values())))]
        for method in ("ema", "sema"):
            if method not in values:
                cells += ["", ""]
                continue
            diff = paired_difference(values[method], base)
            cells += [mean_std_text(mean_std(list(values[method].values()))), diff_text(diff)]
            if diff is not None:  # None: no seed has both runs
                findings.append((point.label, method, diff))
        rows.append(cells)
    lines = [f"## Study: {study.name}", "", study.question, "",
             f"Recipe `{study.recipe}`, seeds {', '.join(map(str, seeds))}; {metric} "
             f"({'higher' if higher else 'lower'} is better), the recipe's reported statistic; Δ = method − baseline, "
             "paired by seed, 95% t interval.", "",
             f"| {study.axis} | baseline | EMA | Δ EMA | SEMA | Δ SEMA |", "|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    if missing:
        lines += ["", f"{missing} run(s) of the study have no finite reported value yet (not run, running, failed "
                      "or diverged): their seeds are left out of the cells above."]
    lines += ["", "**Conclusion.** " + conclusion(findings, higher), ""]
    return "\n".join(lines)


def _verdict(diff, higher_is_better: bool) -> str:
    """"better" / "worse" than the baseline when the 95% interval excludes 0, else "tie" (also when n < 2)."""
    if not diff.significant:
        return "tie"
    return "better" if (diff.mean > 0) == higher_is_better else "worse"


def conclusion(findings: Sequence[tuple[str, str, object]], higher_is_better: bool) -> str:
    """Plain words from the paired differences: per method, where it is significantly better or worse than the
    baseline (along the axis, in order), and where the interval includes zero."""
    if not findings:
        return "No finished runs yet."
    words = []
    for method, name in (("sema", "SEMA"), ("ema", "EMA")):
        mine = [(label, d) for label, m, d in findings if m == method and d.n > 0]
        if not mine:
            continue
        better = [label for label, d in mine if _verdict(d, higher_is_better) == "better"]
        worse = [label for label, d in mine if _verdict(d, higher_is_better) == "worse"]
        unclear = [label for label, d in mine if _verdict(d, higher_is_better) == "tie"]
        parts = []
        if better:
            parts.append(f"significantly better than the baseline at {', '.join(better)}")
        if worse:
            parts.append(f"significantly worse than the baseline at {', '.join(worse)}")
        if unclear:
            parts.append(f"not distinguishable from the baseline (the interval includes 0, or n < 2) at "
                         f"{', '.join(unclear)}")
        first, last = mine[0], mine[-1]
        trend = (f"; its difference goes from {first[1].mean:+.3g} ({first[0]}) to {last[1].mean:+.3g} "
                 f"({last[0]})" if len(mine) > 1 else "")
        words.append(f"{name} is " + "; ".join(parts) + trend + ".")
    return " ".join(words)


STATISTICS = ("final", "best", "median_last")


def statistic_section(root: Path, methods: Sequence[str] = ("ema", "sema")) -> str:
    """Per task under `root` (completed runs), each method's paired difference to the baseline when the runs are
    compared by their final, best or median-of-the-last-k evaluation, and a conclusion per method: whether the
    choice of statistic changes the verdict."""
    import json

    from benchmarks.report.formatting import diff_text
    from benchmarks.stats import paired_difference

    values: dict[tuple, dict[str, dict[str, dict[int, float]]]] = {}  # task -> method -> statistic -> seed -> v
    higher: dict[tuple, bool] = {}
    seen: dict[tuple, Path] = {}
    for path in sorted(Path(root).rglob("result.json")):
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if result.get("status") != "completed" or result.get("method") not in ("baseline", *methods):
            continue
        task = (result["task"], (result.get("config") or {}).get("task", {}).get("model", ""))
        key = (task, result["method"], int(result["seed"]))
        if key in seen:
            raise ValueError(f"{path} and {seen[key]} are both {result['method']} seed {result['seed']} on "
                             f"{task[0]}: give the statistic section one run per method and seed (a sweep's profile "
                             "folder such as runs/cpu/quick, not a study with variants)")
        seen[key] = path
        higher[task] = bool(result.get("higher_is_better", True))
        for statistic in STATISTICS:
            value = (result.get(statistic) or {}).get(result["headline"])
            if value is not None:
                values.setdefault(task, {}).setdefault(result["method"], {}).setdefault(statistic, {})[
                    int(result["seed"])] = float(value)
    lines = ["## Study: the reported statistic", "",
             "Does the verdict depend on which evaluation is reported: the last (final), the best, or the median of "
             "the last k? Δ = method − baseline under the same statistic, paired by seed, 95% t interval.", "",
             "| task | method | Δ final | Δ best | Δ median of last k |", "|---|---|---|---|---|"]
    changed = []
    for task in sorted(values):
        base = values[task].get("baseline", {})
        for method in methods:
            mine = values[task].get(method)
            if not mine:
                continue
            diffs = {st: paired_difference(mine.get(st, {}), base.get(st, {})) for st in STATISTICS}
            if any(d is None for d in diffs.values()):  # no seed with both the method and the baseline
                continue
            lines.append(f"| {task[0]} ({task[1]}) | {method} | "
                         + " | ".join(diff_text(diffs[st]) for st in STATISTICS) + " |")
            verdicts = {st: _verdict(d, higher[task]) for st, d in diffs.items()}
            if len(set(verdicts.values())) > 1:
                changed.append(f"{method} on {task[0]} ({', '.join(f'{st}: {v}' for st, v in verdicts.items())})")
    lines += ["", "**Conclusion.** " + (
        "The statistic changes the verdict (significantly better / worse / tie at 95%) for: " + "; ".join(changed)
        + "." if changed else "No verdict depends on the statistic: where a method is significantly better or worse "
        "than the baseline under one, it is under all three, and ties (including n < 2: no interval) stay ties."), ""]
    return "\n".join(lines)


STUDIES_FILE = "studies.md"  # a published studies folder: this file, and runs/ (the per-run summaries it is made of)


def published_text(results: Path, statistic_of: Optional[Path], command: Optional[str] = None) -> str:
    """The studies report of a published folder: the provenance of its runs (results/<folder>/runs/), every
    study's section from them at its own seeds (Study.seeds), and the reported-statistic section of
    `statistic_of` (e.g. results/cpu/runs)."""
    from benchmarks.publish import RUNS_DIR
    from benchmarks.report.render import provenance_header
    from benchmarks.report.runs import load_runs

    runs, problems = load_runs(results / RUNS_DIR)
    sections = [study_section(study, study.seeds, str(results / RUNS_DIR)) for study in STUDIES.values()]
    if statistic_of is not None:
        sections.append(statistic_section(statistic_of))
    return provenance_header(results / RUNS_DIR, runs, problems, command) + "\n" + "\n".join(sections)


def publish_studies(runs: Path, results: Path, statistic_of: Optional[Path], command: str) -> str:
    """Copy the completed study runs under `runs` to `results/runs/` (benchmarks.publish.snapshot), then write
    `results/studies.md` from those copies; tests/test_published_results.py rebuilds it and compares."""
    from benchmarks.publish import RUNS_DIR, snapshot
    from benchmarks.results import write_text_atomic

    copied, skipped = snapshot(Path(runs), Path(results))
    print(f"{copied} completed study run(s) copied to {Path(results) / RUNS_DIR}; {skipped} not completed, left out")
    text = published_text(Path(results), statistic_of, command)
    write_text_atomic(Path(results) / STUDIES_FILE, text)
    return text


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"studies to run: {', '.join(STUDIES)}")
    parser.add_argument("--list", action="store_true", help="list the studies and their runs")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help=f"replace each study's seeds (length: {list(SEEDS)}, the others: {list(FAST_SEEDS)})")
    parser.add_argument("--out-dir", default="runs/studies", help="root of the run directories")
    parser.add_argument("--jobs", type=int, default=1,
                        help="work units side by side (2 on 2 cores: one thread each), as the suite's --jobs")
    parser.add_argument("--report-only", action="store_true", help="write the sections from the finished runs")
    parser.add_argument("--out", type=Path, default=None, help="write the sections to this markdown file")
    parser.add_argument("--recipe", default=None, help=f"another recipe than {RECIPE} (e.g. smoke/classification)")
    parser.add_argument("--statistic-of", type=Path, default=None, metavar="RUNS",
                        help="the reported-statistic section of the runs under RUNS (e.g. runs/cpu/quick)")
    parser.add_argument("--publish", type=Path, default=None, metavar="RESULTS",
                        help="after running: copy the completed runs to RESULTS/runs/ and write RESULTS/studies.md "
                             "(every study, plus the statistic section of --statistic-of, default results/cpu/runs)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        print(f"--jobs {args.jobs}: at least 1")
        return 2
    unknown = [n for n in args.names if n not in STUDIES]
    if unknown:
        print(f"studies {unknown} do not exist; choose from: {', '.join(STUDIES)}")
        return 2
    if args.publish is not None:
        if args.seeds is not None:  # tests/test_published_results.py rebuilds the report at each study's seeds
            print("--publish writes every study at its own seeds (Study.seeds); run other seeds without --publish "
                  "first (e.g. --seeds 3 4 --out-dir runs/studies), then publish with --report-only")
            return 2
        for name in args.names or list(STUDIES):
            if not args.report_only:
                run_study(STUDIES[name], STUDIES[name].seeds, args.out_dir, args.jobs)
        statistic_of = args.statistic_of or (Path("results/cpu/runs") if Path("results/cpu/runs").is_dir() else None)
        command = "python -m benchmarks.studies " + " ".join(sys.argv[1:] if argv is None else argv)
        publish_studies(Path(args.out_dir), args.publish, statistic_of, command)
        print(f"published to {args.publish / STUDIES_FILE}")
        return 0
    if args.statistic_of is not None:
        text = statistic_section(args.statistic_of)
        print(text)
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(text)
        return 0
    if args.list or not args.names:
        for study in STUDIES.values():
            runs = sum(len(p.methods) for p in study.points) * len(args.seeds or study.seeds)
            print(f"{study.name:9} {runs:3} runs  {study.question}")
        return 0
    sections = []
    for name in args.names:
        study = STUDIES[name] if args.recipe is None else replace(STUDIES[name], recipe=args.recipe)
        seeds = args.seeds or study.seeds
        if not args.report_only:
            run_study(study, seeds, args.out_dir, args.jobs)
        sections.append(study_section(study, seeds, args.out_dir))
    text = "\n".join(sections)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
