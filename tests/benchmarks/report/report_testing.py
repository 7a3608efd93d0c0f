"""Hand-built result.json files for the sema-report tests (imported as `report_testing`, like sema_testing.py:
a module called `conftest` may be another folder's when the whole suite runs)."""

import csv
import json
from pathlib import Path

T975_2 = 4.302652729911275  # Student t, 97.5% quantile, 2 degrees of freedom (3 paired seeds)


def write_result(
    root: Path,
    name: str,
    method: str,
    seed: int,
    status: str = "completed",
    *,
    final=None,
    avg=None,
    online=None,
    headline="top1",
    higher_is_better=True,
    error=None,
    task="classification",
    config_method=None,
    analysis=None,
) -> Path:
    """A run directory with a result.json in the documented schema; avg/online: per-epoch headline values."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    online = online if online is not None else (avg or [])
    history = []
    for i, value in enumerate(online):
        entry = {
            "epoch": i + 1,
            "step": 10 * (i + 1),
            "train_loss": 1.0 / (i + 1),
            "online": {headline: value},
            "avg": {headline: avg[i]} if avg and method != "baseline" else {},
            "time_s": 10.0 * (i + 1) + seed,
        }  # elapsed seconds: 10 s per epoch, seed-dependent offset
        history.append(entry)
    record = {
        "status": status,
        "task": task,
        "dataset": "fashion_mnist",
        "model": "mlp",
        "method": method,
        "seed": seed,
        "profile": "quick",
        "headline": headline,
        "higher_is_better": higher_is_better,
        "final": {headline: final} if final is not None else {},
        "final_online": {headline: online[-1]} if online else {},
        "history": history,
        "wall_time_s": 40.0,
        "error": error,
        "config": {
            "task": {"name": task, "dataset": "fashion_mnist", "model": "mlp"},
            "method": config_method or {"name": method, "decay": 0.999},
            "optim": {"lr": 0.1},
            "trainer": {"epochs": 4, "num_threads": seed},
        },
        "provenance": {
            "git_commit": "abc1234def",
            "git_dirty": False,
            "hardware": {"platform": "Linux-x86_64", "cpu": "x86_64", "cpu_count": 2, "gpus": []},
        },
    }
    (run_dir / "result.json").write_text(json.dumps(record))
    if analysis is not None:
        (run_dir / "analysis.json").write_text(json.dumps(analysis))
    return run_dir


# Three seeds of baseline, EMA and SEMA; each run's final value is its last averaged (baseline: online) value.
BASELINE = {0: [0.50, 0.70, 0.78, 0.80], 1: [0.60, 0.72, 0.80, 0.82], 2: [0.70, 0.80, 0.83, 0.84]}
EMA = {0: [0.55, 0.75, 0.80, 0.81], 1: [0.60, 0.80, 0.83, 0.84], 2: [0.70, 0.80, 0.84, 0.84]}
SEMA = {0: [0.60, 0.82, 0.83, 0.83], 1: [0.70, 0.85, 0.86, 0.86], 2: [0.75, 0.80, 0.86, 0.86]}


def build_sweep(root: Path) -> Path:
    for method, curves in (("baseline", BASELINE), ("ema", EMA), ("sema", SEMA)):
        for seed, curve in curves.items():
            write_result(
                root,
                f"{method}_{seed}",
                method,
                seed,
                final=curve[-1],
                avg=curve,
                online=[v - 0.01 for v in curve] if method != "baseline" else curve,
            )
    write_result(
        root,
        "sema_3",
        "sema",
        3,
        status="failed",
        error="Traceback (most recent call last):\n  File x\nRuntimeError: loss is nan at step 12\n",
    )
    return root


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    with path.open() as fh:
        return {row["method"]: row for row in csv.DictReader(fh)}


def write_two_tables(root: Path) -> Path:
    """Two hand-computable tables of 3 seeds: accuracy (SEMA better, EMA a tie) and error (EMA better, SEMA worse)."""
    accuracy = {"baseline": [0.80, 0.82, 0.84], "ema": [0.81, 0.84, 0.84], "sema": [0.83, 0.86, 0.86]}
    error = {"baseline": [10.0, 11.0, 12.0], "ema": [9.0, 10.0, 11.5], "sema": [11.0, 12.0, 13.0]}
    for method, finals in accuracy.items():
        for seed, final in enumerate(finals):
            write_result(root / "cls", f"{method}{seed}", method, seed, final=final, avg=[0.5, final])
    for method, finals in error.items():
        for seed, final in enumerate(finals):
            write_result(root / "reg", f"{method}{seed}", method, seed, final=final, avg=[20.0, final],
                         headline="mae", higher_is_better=False, task="regression")
    return root
