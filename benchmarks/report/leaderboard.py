"""The cross-task leaderboard: where each method ranks over every table of a report.

    board = build_leaderboard(tables, references=("baseline", "ema"))   # tables: report/tables.py's TaskTables
    write_leaderboard(board, out)        # leaderboard.md, leaderboard.csv, leaderboard.png (performance profile)

Per table (task) and method, against each reference method (default: baseline and EMA; `sema-report
--reference M` for one's own):

* **signed difference**: mean over the shared seeds of s * (method - reference), s = +1 when the headline is higher
  is better and -1 otherwise, so a positive difference is better whatever the metric; with its paired 95% t
  interval (benchmarks/stats.py). Seeds one side lacks are left out and named ("unpaired"); an interval from
  fewer than 3 pairs is marked "few seeds", none exists below 2.
* **verdict** against the first reference: win when the interval lies above 0, loss when below, tie when it covers
  0 (or the two are equal); "n/a" without an interval.
* **score** (the normalisation, our choice): the signed difference to the first reference in percent of that
  reference's mean, 100 * s * (method - reference) / |reference|. It needs no seed spread (one seed works),
  keeps the sign convention, and puts tasks with different metrics on one scale; a task whose reference is 0
  has no score.
* **rank** within the table by s * mean (1 = best, ties share the mean rank); the board shows the mean rank over
  tables with its standard deviation.
* **steps to target**, as a ratio to the first reference's: epochs (= steps / steps per epoch: one recipe, one
  count per epoch) to reach 90%, 95% and 100% of the way from the baseline's first evaluated value to its final
  value (the tables' convergence targets, report/tables.py), mean over the seeds that reached it, method / first
  reference; > 1 is slower, "never" when no seed of the method reached it.
* **performance profile** (Dolan & Moré; AlgoPerf's presentation): for each method, the fraction of tables in which
  its epochs to reach the reference's final value are within a factor tau of the fastest method's, over tau.

Runs of two methods that are bit-identical in a table (the same headline on every seed and the same averaged
curve, e.g. SEMA and EMA at smoke scale when the only switch falls after the last epoch) are flagged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from benchmarks.report.formatting import number_text
from benchmarks.report.tables import CONFIDENCE, MethodSummary, TaskTable
from benchmarks.stats import PairedDiff, mean_std, paired_difference

FEW_SEEDS = 3  # intervals from fewer pairs are marked
TARGETS = (0.9, 0.95, 1.0)  # convergence fractions the board reports
PROFILE_TAUS = [1.0 + 0.05 * i for i in range(61)]  # 1 .. 4


@dataclass
class Entry:
    """One method in one table."""

    task: str  # the table's title
    label: str  # the method (variant) label
    seeds: int  # completed seeds
    mean: Optional[float]  # mean headline
    deltas: dict[str, Optional[PairedDiff]]  # reference -> signed difference (None: no shared seed)
    unpaired: dict[str, list[int]]  # reference -> this method's seeds the reference lacks
    verdict: str  # win | tie | loss | n/a (against the first reference)
    score: Optional[float]  # percent better than the first reference
    rank: float  # within the table
    steps_ratio: dict[float, Optional[float]]  # fraction -> epochs ratio to the first reference (inf: never)
    identical_to: list[str] = field(default_factory=list)  # labels whose runs are bit-identical to this one's


@dataclass
class Leaderboard:
    references: list[str]  # the reference methods, first = the one verdicts, scores and ratios use
    tasks: list[str]  # table titles
    entries: list[Entry]  # every (task, method)
    profile: dict[str, list[float]]  # label -> fraction of tables within tau of the fastest, per PROFILE_TAUS
    notes: list[str]  # tables without a reference, unpaired seeds, identical runs

    def labels(self) -> list[str]:
        seen: dict[str, None] = {}
        for e in self.entries:
            seen.setdefault(e.label, None)
        return list(seen)

    def of(self, label: str) -> list[Entry]:
        return [e for e in self.entries if e.label == label]


def _signed(values: dict[int, float], sign: float) -> dict[int, float]:
    return {s: sign * v for s, v in values.items()}


def _reference(table: TaskTable, name: str) -> Optional[MethodSummary]:
    """The row standing for `name` in a table: the label itself, else the method's variant with most seeds."""
    rows = [m for m in table.methods if m.seeds and (m.label == name or m.method == name)]
    return max(rows, key=lambda m: (m.label == name, len(m.seeds))) if rows else None


def _ranks(values: dict[str, float]) -> dict[str, float]:
    """1 = best (largest); equal values share their mean rank."""
    order = sorted(values, key=lambda k: -values[k])
    ranks: dict[str, float] = {}
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in order[i : j + 1]:
            ranks[k] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _verdict(diff: Optional[PairedDiff]) -> str:
    if diff is None:
        return "n/a"
    if diff.mean == 0 and (diff.ci_low is None or diff.ci_low == diff.ci_high):
        return "tie"
    if diff.ci_low is None:
        return "n/a"
    return "win" if diff.ci_low > 0 else "loss" if diff.ci_high < 0 else "tie"


def _epochs_to(table: TaskTable, label: str, fraction: float) -> Optional[float]:
    """Mean epochs to reach the fraction over the seeds that reached it, inf when none did, None without
    convergence data."""
    cells = table.convergence.get(label)
    if not cells:
        return None
    cell = next((c for c in cells if math.isclose(c.fraction, fraction)), None)
    if cell is None:
        return None
    return cell.epochs.mean if cell.n_reached else math.inf


def _identical(a: MethodSummary, b: MethodSummary, table: TaskTable) -> bool:
    if not a.seeds or a.final.keys() != b.final.keys() or a.final != b.final:
        return False
    curves = {c.label: c.mean for c in table.curves if c.weights == "average"}
    return curves.get(a.label) == curves.get(b.label)


def build_leaderboard(tables: Sequence[TaskTable], references: Sequence[str] = ("baseline", "ema")) -> Leaderboard:
    """The board over `tables` against `references` (the first one sets verdicts, scores, ranks' companion
    ratios and the profile's targets)."""
    if not references:
        raise ValueError("the leaderboard needs at least one reference method (e.g. --reference baseline)")
    entries, notes, fastest_ratio = [], [], {}
    for table in tables:
        sign = 1.0 if table.higher_is_better else -1.0
        refs = {name: _reference(table, name) for name in references}
        if refs[references[0]] is None:
            notes.append(f"{table.title}: no completed {references[0]} run, so no verdicts, scores or ratios.")
        rows = [m for m in table.methods if m.seeds]
        ranks = _ranks({m.label: sign * m.final_stats.mean for m in rows})
        first = refs[references[0]]
        reach_first = {f: _epochs_to(table, first.label, f) if first else None for f in TARGETS}
        to_final = {m.label: _epochs_to(table, m.label, 1.0) for m in rows}
        best = min((v for v in to_final.values() if v is not None), default=None)
        for m in rows:
            deltas, unpaired = {}, {}
            for name, ref in refs.items():
                if ref is None or ref.label == m.label:
                    deltas[name] = None
                    continue
                deltas[name] = paired_difference(_signed(m.final, sign), _signed(ref.final, sign), CONFIDENCE)
                missing = sorted(set(m.final) - set(ref.final))
                if missing:
                    unpaired[name] = missing
                    notes.append(f"{table.title}: {m.label} seeds {missing} have no {ref.label} run: left out of "
                                 "the interval.")
            score = None
            if first is not None and first.label != m.label and first.final_stats.mean:
                score = 100.0 * sign * (m.final_stats.mean - first.final_stats.mean) / abs(first.final_stats.mean)
            ratios = {}
            for f in TARGETS:
                mine, theirs = _epochs_to(table, m.label, f), reach_first[f]
                ratios[f] = None if mine is None or not theirs or math.isinf(theirs) else mine / theirs
            identical = [o.label for o in rows if o.label != m.label and _identical(m, o, table)]
            entries.append(Entry(table.title, m.label, len(m.seeds), m.final_stats.mean, deltas, unpaired,
                                 _verdict(deltas.get(references[0])) if first and first.label != m.label else "-",
                                 score, ranks[m.label], ratios, identical))
            if best is not None and to_final[m.label] is not None:
                fastest_ratio.setdefault(m.label, []).append(to_final[m.label] / best if best else math.inf)
        pairs = {tuple(sorted((e.label, o))) for e in entries if e.task == table.title for o in e.identical_to}
        for a, b in sorted(pairs):
            notes.append(f"{table.title}: {a} and {b} are bit-identical (same headline on every seed and the same "
                         "averaged curve).")
    n_tables = max(1, len([t for t in tables if t.convergence]))
    profile = {label: [sum(r <= tau for r in ratios) / n_tables for tau in PROFILE_TAUS]
               for label, ratios in fastest_ratio.items()}
    return Leaderboard(list(references), [t.title for t in tables], entries, profile, notes)


# ----------------------------------------------------------------------------------------------- rendering
def diff_cell(diff: Optional[PairedDiff]) -> str:
    """A signed difference with its interval: '+0.19 [-0.16, +0.54]', '(1 seed)' without one."""
    if diff is None:
        return "–"
    text = number_text(diff.mean, signed=True)
    if diff.ci_low is None:
        return f"{text} (1 seed)"
    few = ", few seeds" if diff.n < FEW_SEEDS else ""
    return f"{text} [{number_text(diff.ci_low, signed=True)}, {number_text(diff.ci_high, signed=True)}{few}]"


def _ratio_cell(value: Optional[float]) -> str:
    return "–" if value is None else "never" if math.isinf(value) else f"{value:.2f}x"


def summary_rows(board: Leaderboard) -> list[list[str]]:
    """One row per method: W/T/L against the first reference, mean score, mean rank ± std, tables."""
    rows = []
    for label in sorted(board.labels(), key=lambda lb: mean_std([e.rank for e in board.of(lb)]).mean):
        mine = board.of(label)
        counts = {v: sum(e.verdict == v for e in mine) for v in ("win", "tie", "loss", "n/a")}
        scores = [e.score for e in mine if e.score is not None]
        ranks = mean_std([e.rank for e in mine])
        rows.append([label, f"{counts['win']}/{counts['tie']}/{counts['loss']}" + (
                     f" ({counts['n/a']} n/a)" if counts["n/a"] else ""),
                     number_text(mean_std(scores).mean, signed=True) + "%" if scores else "–",
                     f"{ranks.mean:.2f} ± {0.0 if math.isnan(ranks.std) else ranks.std:.2f}", str(len(mine))])
    return rows


def render_leaderboard(board: Leaderboard) -> str:
    first = board.references[0]
    lines = ["## Leaderboard across tasks", "",
             f"Against **{first}**: wins/ties/losses (paired {CONFIDENCE:.0%} interval above / covering / below 0), "
             f"the mean score (percent better than {first}, sign-adjusted so that positive is better), and the mean "
             "rank within each table (1 = best) ± its std. Definitions: benchmarks/report/leaderboard.py.", "",
             f"| method | W/T/L vs {first} | mean score | mean rank | tables |", "|---|---|---|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in summary_rows(board)]
    ref_cols = " | ".join(f"vs {r}" for r in board.references)
    lines += ["", "Per table: signed differences (positive = better) with their interval; the score; the rank; "
              f"epochs to reach 90/95/100% of the way to {first}'s final value, as a ratio to {first}'s.", "",
              f"| table | method | seeds | {ref_cols} | verdict | score | rank | steps 90% | 95% | 100% |",
              "|---|---|---|" + "---|" * len(board.references) + "---|---|---|---|---|---|"]
    for e in board.entries:
        deltas = " | ".join(diff_cell(e.deltas.get(r)) for r in board.references)
        score = "–" if e.score is None else number_text(e.score, signed=True) + "%"
        same = f" (= {', '.join(e.identical_to)})" if e.identical_to else ""
        lines.append(f"| {e.task} | {e.label}{same} | {e.seeds} | {deltas} | {e.verdict} | {score} | {e.rank:g} | "
                     + " | ".join(_ratio_cell(e.steps_ratio.get(f)) for f in TARGETS) + " |")
    if board.notes:
        lines += ["", "Notes:", *(f"- {n}" for n in board.notes)]
    return "\n".join(lines) + "\n"


def write_leaderboard(board: Leaderboard, out: Path, plots: bool = True) -> list[Path]:
    """leaderboard.md, leaderboard.csv (one row per table, method and reference) and leaderboard.png."""
    import csv

    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "leaderboard.md"]
    paths[0].write_text(render_leaderboard(board))
    with open(out / "leaderboard.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["table", "method", "seeds", "mean", "reference", "signed_diff", "ci_low", "ci_high",
                         "pairs", "verdict", "score_pct", "rank", "steps_ratio_90", "steps_ratio_95",
                         "steps_ratio_100", "identical_to"])
        for e in board.entries:
            for ref in board.references:
                d = e.deltas.get(ref)
                writer.writerow([e.task, e.label, e.seeds, e.mean, ref, d.mean if d else None,
                                 d.ci_low if d else None, d.ci_high if d else None, d.n if d else 0,
                                 e.verdict if ref == board.references[0] else None, e.score, e.rank,
                                 *(e.steps_ratio.get(f) for f in TARGETS), ";".join(e.identical_to)])
    paths.append(out / "leaderboard.csv")
    if plots and board.profile:
        paths.append(plot_profile(board, out / "leaderboard.png"))
    return paths


def plot_profile(board: Leaderboard, path: Path) -> Path:
    from benchmarks.plots import _pyplot, save_figure

    fig, ax = _pyplot().subplots(figsize=(7, 4.5))
    for i, (label, fractions) in enumerate(sorted(board.profile.items())):
        ax.step(PROFILE_TAUS, fractions, where="post", label=label, color=f"C{i % 10}")
    ax.set_ylim(-0.02, 1.02)
    return save_figure(fig, ax, path, f"tau: epochs to reach the baseline's final value / the fastest method's",
                       "fraction of tables", "Performance profile across tasks")
