"""Rendering: a TaskTable as text. The cell strings every output shares (markdown, terminal, wandb), the
markdown sections, the provenance header and the list of unusable files."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Optional, Sequence

from benchmarks.report.formatting import diff_text, mean_std_text, number_text
from benchmarks.report.runs import Problem, Run
from benchmarks.report.tables import ConvergenceCell, TaskTable


def _reach_text(cell: ConvergenceCell, what: str, say_count: bool = True) -> str:
    if cell.n_reached == 0:
        return "not reached"
    stats = cell.epochs if what == "epochs" else cell.time_s
    if stats.n == 0:
        return "?"  # reached, but the runs logged no time_s
    text = number_text(stats.mean) if stats.n == 1 else mean_std_text(stats)
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
            mean_std_text(m.final_stats),
            mean_std_text(m.online_stats),
        ]
        row += [
            "—" if m.label == table.references[ref] else diff_text(m.deltas.get(ref))
            for ref in table.references
        ]
        if table.convergence:
            cells = table.convergence.get(m.label)
            full = next((c for c in cells or [] if c.fraction == 1.0), None)
            row += [_reach_text(full, "epochs"), _reach_text(full, "time")] if full else ["", ""]
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
                    number_text(c.target),
                    f"{c.n_reached}/{c.n_runs}",
                    _reach_text(c, "epochs", False),
                    _reach_text(c, "time", False),
                ]
            )
    return rows


def flatness_rows(table: TaskTable) -> list[list[str]]:
    return [
        [r.metric, r.label, mean_std_text(r.stats)]
        + [
            "—"
            if r.deltas.get(ref) is None and r.label == table.references[ref]
            else diff_text(r.deltas.get(ref))
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


STATISTIC_TEXT = {"final": "at the last evaluation", "best": "at each run's best evaluation",
                  "median_last": "the median of each run's last evaluations (result.json median_last)"}


def render_table_markdown(table: TaskTable, images: dict[str, str], root: Optional[Path] = None) -> str:
    parts = [
        f"## {table.title}",
        "",
        table.winner_line,
        "",
        _md_table(main_columns(table), main_rows(table)),
        "",
        f"{table.headline}: mean ± std over seeds of the reported weights (averaged for averaging methods), "
        f"{STATISTIC_TEXT.get(table.statistic, table.statistic)}; "
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
    cpu = hardware.get("cpu") or "?"
    if hardware.get("cpu_model"):
        cpu = f"{hardware['cpu_model']} ({hardware.get('cpu_capability') or '?'})"
    return (
        f"{cpu} x {hardware.get('cpu_count') or '?'} CPUs{accel}, "
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
