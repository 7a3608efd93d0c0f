"""Per-epoch logging: local JSONL + CSV (always, rank 0) and Weights & Biases (offline by default).

wandb runs are grouped for comparison: group = `logger.wandb.group` (default `<task>/<profile>`), job_type = the
method, name = `<method>-s<seed>`, config = the resolved config. The wandb run id is kept in the run directory
(`wandb_run_id.txt`) and in checkpoints, so a resumed or requeued run continues the same wandb run
(`resume="allow"`). Offline runs can be uploaded later with `wandb sync <run_dir>/wandb/offline-run-*`.
"""

from __future__ import annotations

import csv
import json
import uuid
from pathlib import Path
from typing import Any, Optional

from benchmarks.results import _json_safe

LOG_JSONL, LOG_CSV, WANDB_ID_FILE = "log.jsonl", "log.csv", "wandb_run_id.txt"


def flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"avg": {"top1": 1}} -> {"avg/top1": 1}; None sub-dicts are dropped."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, prefix=f"{name}/"))
        elif value is not None:
            flat[name] = value
    return flat


class RunLogger:
    """Writes each epoch's record to log.jsonl / log.csv and, unless disabled, to wandb."""

    def __init__(self, run_dir: Path, wandb_cfg: Any, config: dict, method: str, seed: int,
                 run_id: Optional[str] = None):
        self.run_dir = Path(run_dir)
        self.rows: list[dict[str, Any]] = []
        id_file = self.run_dir / WANDB_ID_FILE
        if run_id is None and id_file.exists():
            run_id = id_file.read_text().strip()
        self.run_id = run_id or uuid.uuid4().hex[:12]
        id_file.write_text(self.run_id + "\n")
        self.wandb_run = None
        if wandb_cfg.mode != "disabled":
            import wandb

            self.wandb_run = wandb.init(
                project=wandb_cfg.project, entity=wandb_cfg.entity, mode=wandb_cfg.mode, group=wandb_cfg.group,
                job_type=method, name=f"{method}-s{seed}", config=config, dir=str(self.run_dir), id=self.run_id,
                resume="allow", reinit="create_new",  # riders: several runs of one process log at once
                settings=wandb.Settings(silent=True),  # its banner would break the progress bars; files say it all
            )

    def restart(self, history: list[dict[str, Any]]) -> None:
        """After a resume: rewrite the local logs from the checkpoint's history (drops epochs that are redone)."""
        self.rows = [flatten(r) for r in history]
        self._write_local()

    def log_epoch(self, record: dict[str, Any]) -> None:
        row = flatten(record)
        self.rows.append(row)
        self._write_local()
        if self.wandb_run is not None:
            self.wandb_run.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=row["step"])

    def _write_local(self) -> None:
        with open(self.run_dir / LOG_JSONL, "w") as f:
            for row in self.rows:
                f.write(json.dumps(_json_safe(row), allow_nan=False) + "\n")
        columns = list(dict.fromkeys(k for row in self.rows for k in row))
        with open(self.run_dir / LOG_CSV, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.rows)

    def finish(self, result: dict[str, Any]) -> None:
        """Close the wandb run with the final numbers as its summary, plus a one-row table for comparisons."""
        if self.wandb_run is None:
            return
        import wandb

        summary = flatten({"final": result.get("final"), "final_online": result.get("final_online"),
                           "best": result.get("best")})
        self.wandb_run.summary.update({**summary, "status": result["status"]})
        row = {"method": result["method"], "seed": result["seed"], "status": result["status"], **summary}
        self.wandb_run.log({"result": wandb.Table(columns=list(row), data=[list(row.values())])})
        self.wandb_run.finish(exit_code=0 if result["status"] == "completed" else 1)
        self.wandb_run = None
