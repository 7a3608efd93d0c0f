"""Shared trajectories: one training run carries any number of passive WA methods ("riders").

A method that never writes into the model (`writes_model = False`: EMA, SWA, LAWA, BEMA, Power EMA; the baseline,
which has no method) leaves the trained trajectory bit for bit as it is, and the engine's evaluation leaves every
RNG as it found it. So the runs `method=baseline`, `method=ema`, `method=swa`, ... of one recipe and seed train
the same weights; one of them (the primary) trains, the others ride along:

    results = engine.run_shared([(cfg_baseline, dir_baseline), (cfg_ema, dir_ema), (cfg_swa, dir_swa)])

Each rider keeps everything a run of its own has: its run directory (the one `method=<name>` would use), its
result.json (with its own averaged metrics, the shared online metrics, and `trajectory`: who trained it and who
shared it), log files, weights/online.safetensors and weights/average.safetensors. The report, resume, skip and the
paired statistics cannot tell it from a separate run. The primary's checkpoint holds every rider's averager state,
so a killed shared run resumes all of them. A method that writes into the model (SEMA, Lookahead) always trains
on its own.

Which member trains (`plan`): members already completed are skipped; if a member's directory holds a checkpoint,
it resumes as the primary with the riders that checkpoint carries (the others wait for the next call); otherwise
the first member trains. `benchmarks.engine.run_shared` repeats until every member is completed or failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from omegaconf import DictConfig, OmegaConf

# Config keys a rider may differ in from its primary (everything else must be equal to share a trajectory).
MAY_DIFFER = ("method", "logger", "out_dir", "riders")


@dataclass
class Rider:
    """A passive method riding on another run's trajectory: its own averager, history, result and files."""

    cfg: DictConfig  # the rider's own composed config (as `method=<name>` composes it)
    run_dir: Path  # its own run directory
    averager: Any = None  # the sema object, bound to the primary's model (set by the Trainer)
    method_kwargs: Optional[dict] = None  # what the averager was built with
    history: list = field(default_factory=list)  # its per-epoch records (online metrics shared, avg its own)
    result: dict = field(default_factory=dict)  # its result.json content
    logger: Any = None  # its RunLogger (rank 0)

    @property
    def name(self) -> str:
        return str(self.cfg.method.name)


def is_passive(method_cfg: Any) -> bool:
    """True for the baseline and for methods whose class declares writes_model = False."""
    import sema

    averager = method_cfg.get("averager") if hasattr(method_cfg, "get") else None
    return averager is None or not sema.METHODS[averager].writes_model


def _comparable(cfg: DictConfig) -> dict:
    config = OmegaConf.to_container(cfg, resolve=True)
    return {k: v for k, v in config.items() if k not in MAY_DIFFER}


def check_shareable(primary: DictConfig, riders: Sequence[DictConfig]) -> None:
    """Raise ValueError unless every run is passive and the configs agree on everything but the method."""
    from benchmarks.results import config_differences

    for cfg in (primary, *riders):
        if not is_passive(cfg.method):
            raise ValueError(f"method={cfg.method.name} writes into the model (writes_model=True): it cannot share a "
                             "trajectory; run it on its own")
    base = _comparable(primary)
    names = [str(primary.method.name)]
    for cfg in riders:
        if cfg.method.get("averager") is None:
            raise ValueError(f"method={cfg.method.name} has no average to carry: it cannot ride on another run; make "
                             "it the run that trains (the first member, e.g. method=baseline riders=[ema,swa])")
        if str(cfg.method.name) in names:
            raise ValueError(f"method={cfg.method.name} is listed twice in one shared trajectory")
        names.append(str(cfg.method.name))
        diffs = config_differences(base, _comparable(cfg))
        if diffs:
            raise ValueError(f"method={cfg.method.name} cannot ride on method={primary.method.name}'s trajectory: "
                             "their configs differ in\n  " + "\n  ".join(diffs[:10]))


TRAJECTORY_FILE = "trajectory.json"  # in the primary's run directory: the riders its checkpoint carries


def plan(members: Sequence[tuple[DictConfig, Path]]) -> tuple[Optional[tuple[DictConfig, Path]],
                                                              list[tuple[DictConfig, Path]], list[tuple[Path, dict]]]:
    """(the member that trains or None, the members riding on it, the completed members as (run_dir, result))."""
    import json

    from benchmarks import checkpoint as ckpt
    from benchmarks.results import read_result

    done, todo = [], []
    for cfg, run_dir in members:
        previous = read_result(run_dir)
        if previous is not None and previous.get("status") == "completed":
            done.append((Path(run_dir), previous))
        else:
            todo.append((cfg, Path(run_dir)))
    if not todo:
        return None, [], done
    from benchmarks.strategy import dcp_path

    for cfg, run_dir in todo:  # resume the trajectory on disk (checkpoint.pt, or fsdp2's DCP), with its riders
        if (run_dir / ckpt.CHECKPOINT_FILE).exists() or dcp_path(run_dir) is not None:
            sidecar = run_dir / TRAJECTORY_FILE
            carried = set(json.loads(sidecar.read_text())["riders"]) if sidecar.exists() else set()
            riders = [(c, d) for c, d in todo if d != run_dir and str(c.method.name) in carried]
            return (cfg, run_dir), riders, done
    first = next((m for m in todo if m[0].method.get("averager") is None), todo[0])  # the baseline cannot ride
    return first, [m for m in todo if m[1] != first[1]], done
