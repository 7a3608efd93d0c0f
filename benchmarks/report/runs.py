"""Loading: every result.json under a directory, and the analysis.json next to it, reduced to what the
report uses. A file that cannot be used (unreadable, partial, missing keys) becomes a Problem with the
reason: listed in the report, never fatal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from benchmarks.config import REPORTED

FLATNESS_KEYS = ("hessian_top_eig", "hessian_min_eig", "hessian_trace", "sharpness")  # analysis.json entries the report tables


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
    group_key: tuple  # (task, dataset key, model, profile, statistic): runs with the same key share a table
    headline: Optional[str] = None  # metric the table compares
    higher_is_better: bool = True
    final: dict = field(default_factory=dict)  # the reported weights' metrics, of `statistic`
    statistic: str = "final"  # which of result.json's final | best | median_last (the run's trainer.reported)
    final_online: dict = field(default_factory=dict)  # the online weights' metrics, of the same `statistic`
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


def as_number(value: Any) -> Optional[float]:
    """float(value) for real numbers (bools excluded); None otherwise. JSON NaN/inf stay as they are."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists are kept as leaves."""
    if not isinstance(tree, dict):
        return {prefix: tree} if prefix else {}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
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
    statistic = str((config.get("trainer") or {}).get("reported") or "final")  # the recipe's choice
    group_key = (  # a table compares one statistic: runs reporting another one get their own table
        str(record["task"]),
        str(task_cfg.get("dataset") or dataset),
        str(task_cfg.get("model") or model),
        profile,
        statistic,
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
    if statistic not in REPORTED:
        raise ValueError(f"trainer.reported={statistic!r} is not one of {', '.join(REPORTED)}")
    final = record.get(statistic)
    if not isinstance(final, dict) or as_number(final.get(headline)) is None:
        raise ValueError(f"completed run without a numeric {statistic}[{headline!r}]")
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
    run.statistic = statistic
    online = record.get(f"{statistic}_online")  # files written before best_online / median_last_online: none
    run.final_online = online if isinstance(online, dict) else {}
    run.history = [h for h in history if isinstance(h, dict)]
    return run


def read_analysis(path: Path) -> dict[str, float]:
    """The flatness/sharpness numbers of an analysis.json (written by sema-analyze), as dotted keys.

    Keeps `<weights>.<measure>[.<rho>]` for weights in (average, online) and measure in FLATNESS_KEYS, e.g.
    "average.sharpness.0.05". A run without averaged weights (the baseline) reports its online weights, so
    they also stand as its "average" entries, as in the main table.
    """
    record = json.loads(path.read_text())
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    if not isinstance(record.get("average"), dict):
        record["average"] = record.get("online")
    numbers = {}
    for key, value in flatten({w: record.get(w) for w in ("average", "online")}).items():
        parts = key.split(".")
        if len(parts) >= 2 and parts[1] in FLATNESS_KEYS and as_number(value) is not None:
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
