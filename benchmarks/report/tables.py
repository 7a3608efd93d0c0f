"""Summarising: runs -> one TaskTable per (task, dataset, model, profile).

For every method: mean ± std over seeds of the headline metric (the averaged weights' for averaging methods,
as in the paper) and of the online weights'; the paired difference to the baseline and to EMA with a 95% t
interval (pairs = shared seeds); epochs and wall time to reach the baseline's final value and fixed fractions
of the way to it; the seeds and failed runs. A line names the winner and says so plainly when SEMA does not
win. `analysis.json` entries (by `sema-analyze`) add a flatness/sharpness table.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Optional, Sequence

from benchmarks.plots import Curve
from benchmarks.report.formatting import diff_text, mean_std_text, number_text
from benchmarks.report.runs import Run, as_number, flatten
from benchmarks.stats import MeanStd, PairedDiff, first_reach, fraction_targets, mean_std, paired_difference

DEFAULT_FRACTIONS = (0.9, 0.95, 0.99, 1.0)  # targets: this fraction of the way from the baseline's first
#                                             evaluated value to its final value (1.0 = the final value)
CONFIDENCE = 0.95  # level of the paired intervals
REFERENCES = ("baseline", "ema")  # methods every other method is compared against
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
            {k: v for sub in VARIANT_SUBTREES for k, v in flatten(run.config.get(sub), sub).items()}
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
        value = as_number((h.get(key) or {}).get(run.headline))
        if value is None:
            continue  # no evaluation this epoch (eval_every > 1)
        epochs.append(float(h.get("epoch", i + 1)))
        values.append(value)
        times.append(as_number(h.get("time_s")))
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
    statistic: str  # of result.json's final | best | median_last that is compared (the recipe's trainer.reported)
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
        f"Targets lie a fraction of the way from the baseline's first evaluated value ({number_text(start)}, "
        f"mean over seeds) to its final value ({number_text(final)}); 100% = the baseline's final value. "
        f"Epochs and wall time (s since the run started) are mean ± std over the seeds that reached the "
        f"target."
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
    line = f"**Winner on {headline} ({direction}): {best.label}** with {mean_std_text(best.final_stats)}"
    if len(ranked) > 1:
        runner = ranked[1]
        diff = paired_difference(best.final, runner.final, CONFIDENCE)
        if runner.final_stats.mean == best.final_stats.mean:  # equal: a tie, never "ahead by +0"
            tied = [m.label for m in ranked[1:] if m.final_stats.mean == best.final_stats.mean]
            line = (f"**Tie on {headline} ({direction}): {best.label} and {', '.join(tied)}** with "
                    f"{mean_std_text(best.final_stats)}.")
        else:
            line += f"; ahead of {runner.label} by {diff_text(diff)}{_significance(diff)}."
    else:
        line += " (the only method with completed runs)."
    sema = [m for m in ranked if _is_sema(m.method)]
    if not sema:
        return line + " No SEMA runs in this table."
    top = [m for m in ranked if m.final_stats.mean == best.final_stats.mean]
    if len(top) > 1 and any(_is_sema(m.method) for m in top):
        return line + " SEMA ties for first."
    if _is_sema(best.method):
        return line + " SEMA wins."
    diff = paired_difference(sema[0].final, best.final, CONFIDENCE)
    return (
        line + f" **SEMA does not win**: its best variant, {sema[0].label}, has "
        f"{mean_std_text(sema[0].final_stats)}, difference to {best.label} "
        f"{diff_text(diff)}{_significance(diff)}."
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
                if (v := as_number(r.final_online.get(headline))) is not None
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
        task, dataset_key, model, profile, statistic = key
        dataset = next((r.dataset for r in completed), dataset_key)
        shown = "" if statistic == "final" else f", {statistic}"  # a recipe's headline statistic other than final
        tables.append(
            TaskTable(
                key=key,
                title=f"{task} / {dataset} / {model} (profile {profile}{shown})",
                slug=_slug(task, dataset_key, model, profile, *([statistic] if shown else [])),
                headline=headline,
                higher_is_better=higher_is_better,
                statistic=statistic,
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
