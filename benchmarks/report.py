"""`sema-report DIR`: every result.json under DIR -> comparison tables (markdown, CSV, terminal) and plots.

    sema-report runs/quick                               # writes runs/quick/report/
    sema-report multirun/ --out results/quick            # choose where the files go
    sema-report multirun/ --wandb-mode offline           # also log the tables as wandb.Table (offline run)

One table per (task, dataset, model, profile). For every method: mean +- std over seeds of the headline
metric (the averaged weights' for averaging methods, as in the paper) and of the online weights'; the paired
difference to the baseline and to EMA with a 95% t interval (pairs = shared seeds); epochs and wall time to
reach the baseline's final value and fixed fractions of the way to it; the seeds and failed runs. A line names
the winner and says so plainly when SEMA does not win. `analysis.json` files (by `sema-analyze`, next to
result.json) add a flatness/sharpness table. Unreadable or partial result files are listed, never fatal.

`summarize(directory, out=None) -> str` does the same as a function (the main job calls it at the end).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import platform
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from benchmarks.plots import Curve, plot_final, plot_learning_curves
from benchmarks.stats import MeanStd, PairedDiff, first_reach, fraction_targets, mean_std, paired_difference

DEFAULT_FRACTIONS = (0.9, 0.95, 0.99, 1.0)  # targets: this fraction of the way from the baseline's first
#                                             evaluated value to its final value (1.0 = the final value)
CONFIDENCE = 0.95  # level of the paired intervals
REFERENCES = ("baseline", "ema")  # methods every other method is compared against
FLATNESS_KEYS = ("hessian_top_eig", "hessian_trace", "sharpness")  # analysis.json entries the report tables
WANDB_MODES = ("disabled", "offline", "online")
# Config subtrees whose differences split one method name into variants (e.g. a switch-interval ablation).
VARIANT_SUBTREES = ("method", "optim", "trainer")
# Operational settings that do not make a different experiment (a rerun with more threads is the same method).
VARIANT_IGNORED = {
    "trainer.checkpoint",
    "trainer.compile",
    "trainer.num_threads",
    "trainer.nan_check_every",
    "trainer.device",
}


# --------------------------------------------------------------------------------------------------- loading


@dataclass
class Run:
    """One result.json, reduced to what the report uses."""

    path: Path  # the result.json file
    status: str  # completed | failed | running
    task: str
    dataset: str  # as the run reported it (display)
    model: str
    profile: str
    method: str  # method name from result.json
    seed: int
    group_key: tuple  # (task, dataset key, model, profile): runs with the same key share a table
    headline: Optional[str] = None  # metric the table compares
    higher_is_better: bool = True
    final: dict = field(default_factory=dict)  # the reported weights' final metrics
    final_online: dict = field(default_factory=dict)  # the online weights' final metrics
    history: list = field(default_factory=list)  # per-epoch records
    error: Optional[str] = None  # traceback of a failed run
    config: dict = field(default_factory=dict)  # the resolved config
    provenance: dict = field(default_factory=dict)
    analysis: dict = field(
        default_factory=dict
    )  # flattened numeric analysis.json entries ("average.sharpness.0.05")
    label: str = ""  # method plus the config values that set it apart from same-named runs; set by group_runs

    @property
    def error_last_line(self) -> str:
        lines = [line.strip() for line in (self.error or "").strip().splitlines() if line.strip()]
        return lines[-1] if lines else "(no error message recorded)"


@dataclass
class Problem:
    """A result file the report could not use, and why."""

    path: Path
    reason: str


def _number(value: Any) -> Optional[float]:
    """float(value) for real numbers (bools excluded); None otherwise. JSON NaN/inf stay as they are."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists are kept as leaves."""
    if not isinstance(tree, dict):
        return {prefix: tree} if prefix else {}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def read_run(path: Path) -> Run:
    """Parse one result.json; raise ValueError saying what is missing or malformed."""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read: {err}") from err
    except json.JSONDecodeError as err:
        raise ValueError(f"not valid JSON ({err.msg} at line {err.lineno}); a partial write?") from err
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    missing = [k for k in ("status", "task", "method", "seed") if record.get(k) is None]
    if missing:
        raise ValueError(f"missing key(s) {', '.join(missing)}")
    status = record["status"]
    if status not in ("completed", "failed", "running"):
        raise ValueError(f"status {status!r}; allowed: completed, failed, running")
    config = record.get("config") if isinstance(record.get("config"), dict) else {}
    task_cfg = config.get("task") if isinstance(config.get("task"), dict) else {}
    # Group by the configured dataset/model keys when present: a run that failed during setup never learnt
    # the display name its dataset reports, but it still belongs to the same table.
    dataset = str(record.get("dataset") or task_cfg.get("dataset") or "?")
    model = str(record.get("model") or task_cfg.get("model") or "?")
    profile = str(record.get("profile") or config.get("profile") or "?")
    group_key = (
        str(record["task"]),
        str(task_cfg.get("dataset") or dataset),
        str(task_cfg.get("model") or model),
        profile,
    )
    try:
        seed = int(record["seed"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"seed {record['seed']!r} is not an integer") from err
    run = Run(
        path=path,
        status=status,
        task=str(record["task"]),
        dataset=dataset,
        model=model,
        profile=profile,
        method=str(record["method"]),
        seed=seed,
        group_key=group_key,
        error=record.get("error"),
        config=config,
        provenance=record.get("provenance") or {},
    )
    if status != "completed":
        return run
    headline = record.get("headline")
    if not isinstance(headline, str):
        raise ValueError("completed run without a 'headline' metric name")
    final = record.get("final")
    if not isinstance(final, dict) or _number(final.get(headline)) is None:
        raise ValueError(f"completed run without a numeric final[{headline!r}]")
    history = record.get("history") or []
    if not isinstance(history, list):
        raise ValueError("'history' is not a list")
    if not isinstance(record.get("higher_is_better"), bool):
        raise ValueError(
            f"completed run without a true/false 'higher_is_better' (got {record.get('higher_is_better')!r})"
        )
    run.headline = headline
    run.higher_is_better = record["higher_is_better"]
    run.final = final
    run.final_online = record.get("final_online") if isinstance(record.get("final_online"), dict) else {}
    run.history = [h for h in history if isinstance(h, dict)]
    return run


def read_analysis(path: Path) -> dict[str, float]:
    """The flatness/sharpness numbers of an analysis.json (written by sema-analyze), as dotted keys.

     Keeps `<weights>.<measure>[.<rho>]` for weights in (average, online) and measure in FLATNESS_KEYS, e.g.
     "average.sharpness.0.05". A run without averaged weights (the baseline) reports its online weights, so
    they
     also stand as its "average" entries, as in the main table.
    """
    record = json.loads(path.read_text())
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    if not isinstance(record.get("average"), dict):
        record["average"] = record.get("online")
    numbers = {}
    for key, value in _flatten({w: record.get(w) for w in ("average", "online")}).items():
        parts = key.split(".")
        if len(parts) >= 2 and parts[1] in FLATNESS_KEYS and _number(value) is not None:
            numbers[key] = float(value)
    return numbers


def load_runs(directory: Path) -> tuple[list[Run], list[Problem]]:
    """Every result.json under `directory` (recursively), and the files that could not be used."""
    runs, problems = [], []
    for path in sorted(Path(directory).rglob("result.json")):
        try:
            run = read_run(path)
        except ValueError as err:
            problems.append(Problem(path, str(err)))
            continue
        analysis_path = path.parent / "analysis.json"
        if analysis_path.exists():
            try:
                run.analysis = read_analysis(analysis_path)
            except (OSError, ValueError) as err:  # JSONDecodeError is a ValueError
                problems.append(Problem(analysis_path, f"unreadable analysis: {err}"))
        runs.append(run)
    return runs, problems


# ---------------------------------------------------------------------------------------------- summarising


def _method_order(method: str) -> tuple:
    """baseline, ema, then SEMA and its presets (what the suite is about), the rest alphabetically."""
    rank = {"baseline": 0, "ema": 1}
    return (rank.get(method, 2 if _is_sema(method) else 3), method)


def _is_sema(method: str) -> bool:
    return method == "sema" or method.startswith("sema")


def label_runs(runs: Sequence[Run]) -> None:
    """Set each run's label: its method, plus the config values that differ among runs of that method."""
    by_method: dict[str, list[Run]] = {}
    for run in runs:
        by_method.setdefault(run.method, []).append(run)
    for method, group in by_method.items():
        flats = [
            {k: v for sub in VARIANT_SUBTREES for k, v in _flatten(run.config.get(sub), sub).items()}
            for run in group
        ]
        keys = sorted(set().union(*flats))
        varying = [
            k
            for k in keys
            if k not in VARIANT_IGNORED and len({json.dumps(f.get(k), sort_keys=True) for f in flats}) > 1
        ]
        for run, flat in zip(group, flats, strict=True):
            parts = [f"{k.split('.', 1)[1] if k.startswith('method.') else k}={flat.get(k)}" for k in varying]
            run.label = f"{method} ({', '.join(parts)})" if parts else method


def _series(run: Run, weights: str) -> tuple[list[float], list[float], list[Optional[float]]]:
    """(epochs, headline values, elapsed seconds) of one run, for "average" or "online" weights.

    Runs without averaged weights (the baseline) report their online weights for both.
    """
    key = "avg" if weights == "average" else "online"
    if key == "avg" and not any(run.headline in (h.get("avg") or {}) for h in run.history):
        key = "online"
    epochs, values, times = [], [], []
    for i, h in enumerate(run.history):
        value = _number((h.get(key) or {}).get(run.headline))
        if value is None:
            continue  # no evaluation this epoch (eval_every > 1)
        epochs.append(float(h.get("epoch", i + 1)))
        values.append(value)
        times.append(_number(h.get("time_s")))
    return epochs, values, times


def _has_average(run: Run) -> bool:
    return any(run.headline in (h.get("avg") or {}) for h in run.history)


@dataclass
class MethodSummary:
    """One row of the main table: a method (variant) over its seeds."""

    label: str  # method plus distinguishing config values (see label_runs)
    method: str  # the method name alone
    seeds: list[int]  # seeds with a completed run
    final: dict[int, float]  # seed -> headline (reported weights)
    online: dict[int, float]  # seed -> headline (online weights)
    failed: list[Run]  # runs with status "failed"
    running: list[Run]  # runs still (or forever, if killed) "running"
    final_stats: MeanStd  # over `final`
    online_stats: MeanStd  # over `online`
    deltas: dict[str, Optional[PairedDiff]] = field(default_factory=dict)  # "baseline"/"ema" -> diff


@dataclass
class ConvergenceCell:
    """How fast one method reached one target."""

    fraction: float  # of the way from the baseline's first value to its final value
    target: float  # the headline value that counts as reached
    n_reached: int  # seeds that reached it
    n_runs: int  # seeds with a completed run
    epochs: MeanStd  # over the seeds that reached
    time_s: MeanStd  # over the seeds that reached and logged time


@dataclass
class FlatnessRow:
    """One method's value of one analysis.json measure, e.g. "average.sharpness.0.05"."""

    metric: str  # dotted analysis key
    label: str  # method label
    stats: MeanStd  # over seeds
    deltas: dict[str, Optional[PairedDiff]]  # "baseline"/"ema" -> paired difference (None for itself)


@dataclass
class TaskTable:
    """Everything one (task, dataset, model, profile) table shows."""

    key: tuple  # (task, dataset key, model, profile)
    title: str  # heading shown above the table
    slug: str  # file-name stem of the table's .md/.csv/.png files
    headline: str  # the compared metric
    higher_is_better: bool  # its direction
    methods: list[MethodSummary]  # rows, baseline and EMA first
    references: dict[str, str]  # reference name ("baseline"/"ema") -> the label used as that reference
    convergence: dict[str, list[ConvergenceCell]]  # label -> cells, one per fraction; {} without a baseline
    convergence_note: str  # how the targets were set, or why there are none
    flatness: list[FlatnessRow]  # from analysis.json files; [] when there are none
    winner_line: str  # the plain-words verdict
    notes: list[str]  # caveats (duplicate seeds, disagreeing headlines)
    curves: list[Curve]  # learning curves for the plot


def _pick_reference(methods: list[MethodSummary], name: str) -> Optional[MethodSummary]:
    """The run group that stands for `name`: the plain label if present, else the variant with most seeds."""
    candidates = [m for m in methods if m.method == name and m.seeds]
    if not candidates:
        return None
    return max(candidates, key=lambda m: (m.label == name, len(m.seeds)))


def _convergence(
    table_runs: dict[str, dict[int, Run]],
    baseline: Optional[MethodSummary],
    fractions: Sequence[float],
    higher_is_better: bool,
) -> tuple[dict, str]:
    if baseline is None:
        return {}, "No completed baseline run: epochs-to-target needs the baseline's final value."
    starts = [
        vals[0] for vals in (_series(r, "online")[1] for r in table_runs[baseline.label].values()) if vals
    ]
    if not starts:
        return {}, "The baseline logged no per-epoch headline values: epochs-to-target is unavailable."
    start, final = mean_std(starts).mean, baseline.final_stats.mean
    targets = fraction_targets(start, final, fractions)
    result: dict[str, list[ConvergenceCell]] = {}
    for label, by_seed in table_runs.items():
        cells = []
        for f, target in targets.items():
            epochs, times = [], []
            for run in by_seed.values():
                ep, values, ts = _series(run, "average")
                i = first_reach(values, target, higher_is_better)
                if i is not None:
                    epochs.append(ep[i])
                    if ts[i] is not None:
                        times.append(ts[i])
            cells.append(
                ConvergenceCell(f, target, len(epochs), len(by_seed), mean_std(epochs), mean_std(times))
            )
        result[label] = cells
    note = (
        f"Targets lie a fraction of the way from the baseline's first evaluated value ({_fmt(start)}, mean "
        f"over seeds) to its final value ({_fmt(final)}); 100% = the baseline's final value. Epochs and wall "
        f"time (s since the run started) are mean ± std over the seeds that reached the target."
    )
    return result, note


def _curves(table_runs: dict[str, dict[int, Run]]) -> list[Curve]:
    curves = []
    for label, by_seed in table_runs.items():
        with_average = any(_has_average(r) for r in by_seed.values())
        for weights in ("average", "online") if with_average else ("average",):
            per_epoch: dict[float, list[float]] = {}
            for run in by_seed.values():
                for e, v in zip(*_series(run, weights)[:2], strict=True):
                    per_epoch.setdefault(e, []).append(v)
            if not per_epoch:
                continue
            epochs = sorted(per_epoch)
            stats = [mean_std(per_epoch[e]) for e in epochs]
            curves.append(Curve(label, weights, epochs, [s.mean for s in stats], [s.std for s in stats]))
    return curves


def _flatness(table_runs: dict[str, dict[int, Run]], references: dict[str, str]) -> list[FlatnessRow]:
    metrics = sorted({k for by_seed in table_runs.values() for r in by_seed.values() for k in r.analysis})
    rows = []
    for metric in metrics:
        values = {
            label: {s: r.analysis[metric] for s, r in by_seed.items() if metric in r.analysis}
            for label, by_seed in table_runs.items()
        }
        for label, by_seed in values.items():
            if not by_seed:
                continue
            deltas = {
                ref: (
                    paired_difference(by_seed, values[ref_label], CONFIDENCE) if ref_label != label else None
                )
                for ref, ref_label in references.items()
            }
            rows.append(FlatnessRow(metric, label, mean_std(list(by_seed.values())), deltas))
    return rows


def _winner_line(methods: list[MethodSummary], headline: str, higher_is_better: bool) -> str:
    ranked = sorted(
        (m for m in methods if m.seeds), key=lambda m: m.final_stats.mean, reverse=higher_is_better
    )
    if not ranked:
        return "No completed runs: no winner."
    direction = "higher is better" if higher_is_better else "lower is better"
    best = ranked[0]
    line = f"**Winner on {headline} ({direction}): {best.label}** with {_fmt_ms(best.final_stats)}"
    if len(ranked) > 1:
        runner = ranked[1]
        diff = paired_difference(best.final, runner.final, CONFIDENCE)
        line += f"; ahead of {runner.label} by {_fmt_diff(diff)}{_significance(diff)}."
    else:
        line += " (the only method with completed runs)."
    sema = [m for m in ranked if _is_sema(m.method)]
    if not sema:
        return line + " No SEMA runs in this table."
    if _is_sema(best.method):
        return line + " SEMA wins."
    diff = paired_difference(sema[0].final, best.final, CONFIDENCE)
    return (
        line
        + f" **SEMA does not win**: its best variant, {sema[0].label}, has {_fmt_ms(sema[0].final_stats)}, "
        f"difference to {best.label} {_fmt_diff(diff)}{_significance(diff)}."
    )


def _significance(diff: Optional[PairedDiff]) -> str:
    if diff is None or diff.ci_low is None:
        return " (no interval: fewer than 2 paired seeds)"
    return f" ({'significant' if diff.significant else 'not significant'} at {diff.confidence:.0%})"


def _slug(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", "_".join(parts)).strip("-")


def build_tables(runs: Sequence[Run], fractions: Sequence[float] = DEFAULT_FRACTIONS) -> list[TaskTable]:
    """One TaskTable per (task, dataset key, model, profile), in a stable order."""
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.group_key, []).append(run)
    tables = []
    for key in sorted(groups):
        group = groups[key]
        label_runs(group)
        completed = [r for r in group if r.status == "completed"]
        notes: list[str] = []
        headlines = {(r.headline, r.higher_is_better) for r in completed}
        if len(headlines) > 1:
            notes.append(
                f"Runs disagree on the headline metric {sorted(headlines)}; the table uses the first."
            )
        headline, higher_is_better = sorted(headlines)[0] if headlines else ("headline", True)
        table_runs: dict[str, dict[int, Run]] = {}
        for run in sorted(completed, key=lambda r: str(r.path)):
            by_seed = table_runs.setdefault(run.label, {})
            if run.seed in by_seed:
                notes.append(
                    f"{run.label} seed {run.seed}: several completed runs; using {by_seed[run.seed].path}, "
                    f"ignoring {run.path}."
                )
                continue
            by_seed[run.seed] = run
        labels = sorted({r.label for r in group}, key=lambda lb: (_method_order(lb.split(" ")[0]), lb))
        methods = []
        for label in labels:
            by_seed = table_runs.get(label, {})
            final = {s: float(r.final[headline]) for s, r in by_seed.items() if headline in r.final}
            online = {
                s: float(v)
                for s, r in by_seed.items()
                if (v := _number(r.final_online.get(headline, r.final.get(headline)))) is not None
            }
            summary = MethodSummary(
                label=label,
                method=label.split(" ")[0],
                seeds=sorted(by_seed),
                final=final,
                online=online,
                failed=[r for r in group if r.label == label and r.status == "failed"],
                running=[r for r in group if r.label == label and r.status == "running"],
                final_stats=mean_std(list(final.values())),
                online_stats=mean_std(list(online.values())),
            )
            methods.append(summary)
        references = {}
        for name in REFERENCES:
            ref = _pick_reference(methods, name)
            if ref is not None:
                references[name] = ref.label
        for m in methods:
            for name, ref_label in references.items():
                ref = next(x for x in methods if x.label == ref_label)
                m.deltas[name] = (
                    None if m.label == ref_label else paired_difference(m.final, ref.final, CONFIDENCE)
                )
        baseline = next((m for m in methods if m.label == references.get("baseline")), None)
        convergence, convergence_note = _convergence(table_runs, baseline, fractions, higher_is_better)
        task, dataset_key, model, profile = key
        dataset = next((r.dataset for r in completed), dataset_key)
        tables.append(
            TaskTable(
                key=key,
                title=f"{task} / {dataset} / {model} (profile {profile})",
                slug=_slug(task, dataset_key, model, profile),
                headline=headline,
                higher_is_better=higher_is_better,
                methods=methods,
                references=references,
                convergence=convergence,
                convergence_note=convergence_note,
                flatness=_flatness(table_runs, references),
                winner_line=_winner_line(methods, headline, higher_is_better),
                notes=notes,
                curves=_curves(table_runs),
            )
        )
    return tables


# ------------------------------------------------------------------------------------------------ rendering


def _fmt(x: Optional[float], signed: bool = False) -> str:
    if x is None or math.isnan(x):
        return ""
    return f"{x:+.4g}" if signed else f"{x:.4g}"


def _fmt_ms(stats: MeanStd) -> str:
    if stats.n == 0:
        return ""
    if stats.n == 1:
        return f"{_fmt(stats.mean)} (n=1)"
    return f"{_fmt(stats.mean)} ± {_fmt(stats.std)}"


def _fmt_diff(diff: Optional[PairedDiff]) -> str:
    if diff is None:
        return "n/a (no shared seeds)"
    if diff.ci_low is None:
        return f"{_fmt(diff.mean, True)} (n={diff.n})"
    return f"{_fmt(diff.mean, True)} [{_fmt(diff.ci_low, True)}, {_fmt(diff.ci_high, True)}] (n={diff.n})"


def _fmt_reach(cell: ConvergenceCell, what: str, say_count: bool = True) -> str:
    if cell.n_reached == 0:
        return "not reached"
    stats = cell.epochs if what == "epochs" else cell.time_s
    if stats.n == 0:
        return "?"  # reached, but the runs logged no time_s
    text = _fmt(stats.mean) if stats.n == 1 else _fmt_ms(stats)
    if say_count and cell.n_reached < cell.n_runs:
        text += f" ({cell.n_reached}/{cell.n_runs} reached)"
    return text


def main_columns(table: TaskTable) -> list[str]:
    arrow = "↑" if table.higher_is_better else "↓"
    columns = ["method", "seeds", "failed", f"{table.headline} {arrow}", f"{table.headline} online"]
    columns += [f"Δ vs {ref} [95% CI]" for ref in table.references]
    if table.convergence:
        columns += ["epochs to baseline final", "time to it (s)"]
    return columns


def main_rows(table: TaskTable) -> list[list[str]]:
    rows = []
    for m in table.methods:
        row = [
            m.label,
            str(len(m.seeds)),
            str(len(m.failed)),
            _fmt_ms(m.final_stats),
            _fmt_ms(m.online_stats),
        ]
        row += [
            "—" if m.label == table.references[ref] else _fmt_diff(m.deltas.get(ref))
            for ref in table.references
        ]
        if table.convergence:
            cells = table.convergence.get(m.label)
            full = next((c for c in cells or [] if c.fraction == 1.0), None)
            row += [_fmt_reach(full, "epochs"), _fmt_reach(full, "time")] if full else ["", ""]
        rows.append(row)
    return rows


def _md_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    escape = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(map(escape, columns)) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(map(escape, row)) + " |" for row in rows]
    return "\n".join(lines)


def convergence_rows(table: TaskTable) -> list[list[str]]:
    rows = []
    for label, cells in table.convergence.items():
        for c in cells:
            rows.append(
                [
                    label,
                    f"{c.fraction:.0%}",
                    _fmt(c.target),
                    f"{c.n_reached}/{c.n_runs}",
                    _fmt_reach(c, "epochs", False),
                    _fmt_reach(c, "time", False),
                ]
            )
    return rows


def flatness_rows(table: TaskTable) -> list[list[str]]:
    return [
        [r.metric, r.label, _fmt_ms(r.stats)]
        + [
            "—"
            if r.deltas.get(ref) is None and r.label == table.references[ref]
            else _fmt_diff(r.deltas.get(ref))
            for ref in table.references
        ]
        for r in table.flatness
    ]


def _shown(path: Path, root: Optional[Path]) -> str:
    """`path` relative to the reported directory when inside it (shorter, and stable across machines)."""
    try:
        return str(path.relative_to(root)) if root is not None else str(path)
    except ValueError:
        return str(path)


def render_table_markdown(table: TaskTable, images: dict[str, str], root: Optional[Path] = None) -> str:
    parts = [
        f"## {table.title}",
        "",
        table.winner_line,
        "",
        _md_table(main_columns(table), main_rows(table)),
        "",
        f"{table.headline}: mean ± std over seeds of the reported weights (averaged for averaging methods); "
        "Δ = method − reference, paired by seed, with a 95% t interval (none when n < 2).",
    ]
    if table.convergence:
        parts += [
            "",
            "### Convergence speed",
            "",
            table.convergence_note,
            "",
            _md_table(
                ["method", "target", "value", "reached", "epochs", "wall time (s)"], convergence_rows(table)
            ),
        ]
    elif table.convergence_note:
        parts += ["", table.convergence_note]
    if table.flatness:
        parts += [
            "",
            "### Flatness and sharpness (from analysis.json; lower = flatter)",
            "",
            _md_table(
                ["metric", "method", "mean ± std"] + [f"Δ vs {ref} [95% CI]" for ref in table.references],
                flatness_rows(table),
            ),
        ]
    failed = [r for m in table.methods for r in m.failed]
    if failed:
        parts += ["", "### Failed runs", ""]
        parts += [
            f"- {r.label} seed {r.seed}: {r.error_last_line} (`{_shown(r.path, root)}`)" for r in failed
        ]
    running = [r for m in table.methods for r in m.running]
    if running:
        parts += [
            "",
            "Not finished (status running, not counted): "
            + ", ".join(f"{r.label} seed {r.seed}" for r in running),
        ]
    if table.notes:
        parts += [""] + [f"- {n}" for n in table.notes]
    if images:
        parts += [""] + [f"![{name}]({file})" for name, file in images.items()]
    return "\n".join(parts) + "\n"


def _commit_text(prov: dict) -> str:
    commit = str(prov.get("git_commit") or "unknown")[:12]
    return commit + (" (dirty)" if prov.get("git_dirty") else "")


def _machine_text(hardware: dict) -> str:
    gpus = hardware.get("gpus") or []
    accel = f", {len(gpus)} x {gpus[0]}" if gpus else ", no GPU"
    return (
        f"{hardware.get('cpu') or '?'} x {hardware.get('cpu_count') or '?'} CPUs{accel}, "
        f"{hardware.get('platform') or '?'}"
    )


def _counted(items: Sequence[str]) -> str:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return "; ".join(f"{item} ({n} runs)" for item, n in sorted(counts.items()))


def provenance_header(
    directory: Path, runs: Sequence[Run], problems: Sequence[Problem], command: Optional[str] = None
) -> str:
    """Where this report and its runs came from (the same provenance helper as every run's result.json)."""
    from benchmarks.results import provenance

    here = provenance(seed=0)  # this process: the report's own code version, date and machine (seed unused)
    command = command or here["command"]
    counts = {s: sum(r.status == s for r in runs) for s in ("completed", "failed", "running")}
    lines = [
        f"# sema-report: {directory}",
        "",
        f"- command: `{command}`",
        f"- report code commit: {_commit_text(here)}",
        f"- date: {here['date']}",
        f"- machine: {platform.node()}: {_machine_text(here['hardware'])}",
        f"- runs: {len(runs)} result.json files read ({counts['completed']} completed, "
        f"{counts['failed']} failed, "
        f"{counts['running']} running), {len(problems)} unusable",
        f"- runs' commits: {_counted([_commit_text(r.provenance) for r in runs])}",
        f"- runs' machines: {_counted([_machine_text(r.provenance.get('hardware') or {}) for r in runs])}",
    ]
    return "\n".join(lines) + "\n"


def render_problems(problems: Sequence[Problem], root: Optional[Path] = None) -> str:
    if not problems:
        return ""
    lines = [f"- `{_shown(p.path, root)}`: {p.reason}" for p in problems]
    return "\n".join(["## Unusable result files", ""] + lines) + "\n"


# -------------------------------------------------------------------------------------------------- writing


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


def summarize(
    directory,
    out=None,
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    plots: bool = True,
    wandb_mode: str = "disabled",
    command: Optional[str] = None,
    console=None,
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
    markdown = (
        header
        + "\n"
        + "\n".join(sections)
        + ("\n" + render_problems(problems, directory) if problems else "")
    )
    (out / "report.md").write_text(markdown)
    print_tables(tables, problems, console)
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
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"sema-report: {err}", file=sys.stderr)
        return 1
    out = args.out or args.directory / "report"
    print(f"report written to {out}/ (report.md, one .md/.csv/.png set per table)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
