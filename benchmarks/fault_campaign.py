"""`python -m benchmarks.fault_campaign`: SIGKILL real runs at random points; every rerun must end bit for bit like
a run that was never interrupted, or refuse, naming why. Nothing finished may be lost.

    python -m benchmarks.fault_campaign                          # 5 cases x 4 trials, seed 0: the table
    python -m benchmarks.fault_campaign --trials 8 --seed 1 --out /tmp/faults --keep

Each case is one `sema-bench` command (a smoke recipe, a method, maybe riders on its trajectory, a checkpoint every
few steps). Per case: the command once, uninterrupted, in a child process (its wall time is measured); then per
trial: the command in a child process, SIGKILLed at a random point (seeded): one in five uniformly inside the start-up
(from its spawn to its first result.json, as measured on the uninterrupted run), the others uniformly inside the
training (from the child's own first result.json, for as long as the uninterrupted run took from there until every
result.json said "completed"); then
the same command again, to its end. A trial is

    identical  the rerun completed, and every run of the command (the method and each rider) has the
               uninterrupted run's history (all but times) and weights, tensor for tensor;
    refused    the rerun exited non-zero (e.g. CorruptFile, ConfigMismatch), its message printed;
    lost       a checkpoint was on disk after the kill, yet the rerun trained from an earlier step (or from 0);
    different  completed, but with other numbers (a resume bug).

Where each kill landed is reported too: before the run's first file, inside a write (a temporary file was left
behind), in epoch k, or after the run had ended. The command exits 1 unless every trial is identical. The slow test tests/benchmarks/test_faults.py runs
it; the figures of the note come from this command.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

FAST = ["logger.wandb.mode=disabled", "trainer.num_threads=1", "logger.progress=false"]
KEYS = ("epoch", "step", "train_loss", "lr", "switched", "avg", "online")  # a history record minus its times
RESUMED = re.compile(r"resuming after epoch (\d+) \(step (\d+)\)")
STARTUP_SHARE = 0.2  # the share of kills drawn inside start-up (imports, data, model) rather than in training


@dataclass(frozen=True)
class Case:
    recipe: str  # a smoke recipe (fast on the CPU)
    method: str
    riders: tuple[str, ...] = ()  # passive methods on the method's trajectory (benchmarks/riders.py)
    overrides: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        riders = f"+{'+'.join(self.riders)}" if self.riders else ""
        return f"{self.recipe}/{self.method}{riders}"

    def args(self, out_dir: Path) -> list[str]:
        riders = [f"riders=[{','.join(self.riders)}]"] if self.riders else []
        return [f"recipe={self.recipe}", f"method={self.method}", *riders, f"out_dir={out_dir}", *FAST,
                *self.overrides]


CASES = (  # several tasks and methods, an active (writes the model) and passive ones, a shared trajectory
    Case("smoke/classification", "sema", overrides=("trainer.checkpoint_every_steps=3",)),
    Case("smoke/classification", "baseline", riders=("ema", "swa"), overrides=("trainer.checkpoint_every_steps=3",)),
    Case("smoke/regression", "bema", overrides=("trainer.checkpoint_every_steps=2",)),
    Case("smoke/lm", "lookahead", overrides=("trainer.checkpoint_every_steps=2",)),
    Case("smoke/generation", "power_ema", overrides=("trainer.checkpoint_every_steps=2",)),
)


@dataclass
class Trial:
    case: str
    delay_s: float
    landed: str = ""  # where the kill landed
    checkpoint_step: Optional[int] = None  # the global step of the checkpoint on disk after the kill
    resumed_step: Optional[int] = None  # the step the rerun said it resumed from (None: it started at 0)
    outcome: str = ""  # identical | refused | lost | different
    detail: str = ""


@dataclass
class Report:
    trials: list[Trial] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        return sum(t.outcome == outcome for t in self.trials)

    def table(self) -> str:
        lines = ["| case | trials | identical | refused | lost | different | where the kills landed |",
                 "|---|---|---|---|---|---|---|"]
        for case in dict.fromkeys(t.case for t in self.trials):
            mine = [t for t in self.trials if t.case == case]
            landed = ", ".join(sorted({t.landed for t in mine}))
            lines.append(f"| {case} | {len(mine)} | " + " | ".join(
                str(sum(t.outcome == o for t in mine)) for o in ("identical", "refused", "lost", "different"))
                + f" | {landed} |")
        lines.append(f"| **all** | {len(self.trials)} | {self.count('identical')} | {self.count('refused')} | "
                     f"{self.count('lost')} | {self.count('different')} | |")
        return "\n".join(lines)


def _cli(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "benchmarks.cli", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}


def _complete(args: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(_cli(args), capture_output=True, text=True, env=_env(), timeout=timeout)


def _runs(out_dir: Path) -> dict[str, Path]:
    """{run directory relative to out_dir: its path} for every run of the command (the method and its riders)."""
    return {str(p.parent.relative_to(out_dir)): p.parent for p in sorted(out_dir.glob("**/result.json"))}


def _summary(run_dir: Path) -> tuple[list[dict], dict]:
    from safetensors.torch import load_file

    result = json.loads((run_dir / "result.json").read_text())
    history = [{k: record.get(k) for k in KEYS} for record in result["history"]]
    weights = {p.name: load_file(p) for p in sorted((run_dir / "weights").glob("*.safetensors"))}
    return history, {"status": result["status"], "weights": weights}


def _same(a: Path, b: Path) -> str:
    """'' when the two runs are identical, else what differs."""
    (ha, wa), (hb, wb) = _summary(a), _summary(b)
    if wb["status"] != "completed":
        return f"status {wb['status']}"
    if ha != hb:
        return "history differs"
    if wa["weights"].keys() != wb["weights"].keys():
        return f"weight files {sorted(wa['weights'])} vs {sorted(wb['weights'])}"
    for name, tensors in wa["weights"].items():
        other = wb["weights"][name]
        if tensors.keys() != other.keys() or not all(torch.equal(tensors[k], other[k]) for k in tensors):
            return f"{name} differs"
    return ""


def _all_completed(out_dir: Path) -> bool:
    try:
        return all(json.loads((d / "result.json").read_text()).get("status") == "completed"
                   for d in _runs(out_dir).values())
    except (OSError, ValueError):  # being replaced right now
        return False


def _landed(out_dir: Path) -> tuple[str, Optional[int]]:
    """Where a kill landed, read from what it left in out_dir; and the step of the checkpoint on disk."""
    from benchmarks.checkpoint import CHECKPOINT_FILE
    from benchmarks.integrity import STALE_PATTERNS

    runs = _runs(out_dir)
    step = None
    for run_dir in runs.values():
        checkpoint = run_dir / CHECKPOINT_FILE
        if checkpoint.is_file():
            try:
                step = int(torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"])
            except Exception:  # damaged: the rerun must refuse it, named
                step = -1
    if not runs:
        return "before the first file", step
    if any(next(run_dir.glob(pattern), None) for run_dir in runs.values() for pattern in STALE_PATTERNS):
        return "inside a write", step
    statuses, epochs = set(), set()
    for run_dir in runs.values():
        try:
            result = json.loads((run_dir / "result.json").read_text())
        except (OSError, ValueError):
            return "inside a write", step
        statuses.add(result.get("status"))
        epochs.add(len(result.get("history") or []))
    if statuses == {"completed"}:
        return "after the end", step
    return f"in epoch {max(epochs) + 1}", step  # (epoch k+1 up to its first checkpoint includes k's end)


def run_case(case: Case, trials: int, rng: random.Random, root: Path, log=print) -> list[Trial]:
    straight_dir = root / "straight"
    start = time.perf_counter()
    errors = tempfile.TemporaryFile("w+")  # a file, not a pipe: a chatty child never blocks on a full pipe
    child = subprocess.Popen(_cli(case.args(straight_dir)), stdout=subprocess.DEVNULL, stderr=errors, text=True,
                             env=_env())
    first_file = completed = None  # when its first result.json appeared (start-up over), when all said completed
    while child.poll() is None:
        now = time.perf_counter() - start
        if first_file is None and next(straight_dir.glob("**/result.json"), None) is not None:
            first_file = now
        if first_file is not None and completed is None and _all_completed(straight_dir):
            completed = now
        time.sleep(0.005)
    wall = time.perf_counter() - start
    errors.seek(0)
    said = errors.read()
    errors.close()
    if child.returncode != 0:
        raise RuntimeError(f"the uninterrupted run of {case.name} failed:\n{said[-3000:]}")
    startup = first_file if first_file is not None else wall
    training = (completed if completed is not None else wall) - startup  # up to its last result.json write
    reference = _runs(straight_dir)
    out = []
    for index in range(trials):
        out_dir = root / f"trial{index}"
        in_startup = rng.random() < STARTUP_SHARE
        wait = rng.uniform(0.0, startup if in_startup else training)
        spawned = time.perf_counter()
        child = subprocess.Popen(_cli(case.args(out_dir)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 env=_env())
        if not in_startup:  # the clock starts when this child's training starts (its first result.json)
            while child.poll() is None and next(out_dir.glob("**/result.json"), None) is None:
                time.sleep(0.002)
        time.sleep(wait)
        child.send_signal(signal.SIGKILL)
        child.wait()
        trial = Trial(case.name, delay_s=round(time.perf_counter() - spawned, 3))
        trial.landed, trial.checkpoint_step = _landed(out_dir)
        rerun = _complete(case.args(out_dir))
        said = rerun.stdout + rerun.stderr
        resumed = RESUMED.findall(said)
        skipped = "already completed" in said  # nothing left to train
        trial.resumed_step = int(resumed[-1][1]) if resumed else None
        if rerun.returncode != 0:
            trial.outcome = "refused"
            trial.detail = (rerun.stderr.strip().splitlines() or ["(no message)"])[-1]
        elif trial.checkpoint_step == -1:  # atomic writes must never leave one; had the rerun not refused it...
            trial.outcome, trial.detail = "lost", "the kill left an unreadable checkpoint.pt"
        elif not skipped and trial.checkpoint_step is not None and (trial.resumed_step or 0) < trial.checkpoint_step:
            trial.outcome = "lost"
            trial.detail = f"checkpoint at step {trial.checkpoint_step}, rerun from {trial.resumed_step or 0}"
        else:
            runs = _runs(out_dir)
            diffs = [f"{name}: {d}" for name, path in reference.items()
                     if (d := (_same(path, runs[name]) if name in runs else "missing"))]
            trial.outcome, trial.detail = ("different", "; ".join(diffs)) if diffs else ("identical", "")
        log(f"{case.name} trial {index}: kill at {trial.delay_s:.2f} s of {wall:.2f} s (training from {startup:.2f} "
            f"to {startup + training:.2f} s; {trial.landed}; checkpoint step {trial.checkpoint_step}, resumed from {trial.resumed_step}): {trial.outcome} {trial.detail}")
        out.append(trial)
        shutil.rmtree(out_dir, ignore_errors=True)
    return out


def campaign(trials: int, seed: int, out: Path, cases=CASES, log=print) -> Report:
    rng = random.Random(seed)
    report = Report()
    for number, case in enumerate(cases):
        report.trials += run_case(case, trials, rng, out / f"case{number}", log)
    return report


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=4, help="kills per case (5 cases)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill delays")
    parser.add_argument("--out", type=Path, default=None, help="where the runs go (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the uninterrupted runs in --out")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="sema-faults-"))
    try:
        report = campaign(args.trials, args.seed, out)
    finally:
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    print(f"\nSIGKILL campaign: {len(report.trials)} trials, seed {args.seed}\n{report.table()}")
    return 0 if report.count("identical") == len(report.trials) else 1  # a kill must never cost a refusal


if __name__ == "__main__":
    sys.exit(main())
