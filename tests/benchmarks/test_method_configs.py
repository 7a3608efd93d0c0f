"""Every method choice composes for every task and builds; the comparison methods pass the documented arguments
to sema and train end to end through the engine."""

import json

import pytest
import torch

import sema
from benchmarks.methods import build_averager, choices, method_kwargs
from benchmarks.recipes import CONFIG_DIR, compose_run
from benchmarks.tasks import TASKS

FAST = ["logger.wandb.mode=disabled", "trainer.num_threads=1"]
METHODS = tuple(m for m in choices(CONFIG_DIR / "method") if m != "baseline")  # every averaging method
EXPECTED = {  # the keyword arguments each config passes to sema at quick/classification (78 steps per epoch;
    #            averaging.tail_start 6 of the 8 epochs: SWA's start and BEMA's burn-in are 6 x 78 = 468 steps)
    "swa": (sema.SWA, dict(start_steps=468, update_every=1, buffers="average", bn_update_batches=50)),
    "lawa": (sema.LAWA, dict(k=5, every=1, start=0, unit="epoch", buffers="average")),
    "bema": (sema.BEMA, dict(ema_power=0.5, bias_power=0.2, lag=10.0, multiplier=1.0, beta_min=0.0, burnin_steps=468,
                             update_every=1, buffers="ignore")),
    "power_ema": (sema.PowerEMA, dict(gamma=None, sigma_rel=0.10, update_every=1, buffers="average")),
    "lookahead": (sema.Lookahead, dict(k=5, alpha=0.5, buffers="ignore")),
    "sema_blend": (sema.SEMA, dict(decay=0.99, warmup=None, warmup_steps=78, warmup_ratio=0.9, warmup_power=2 / 3,
                                   warmup_gamma=None, update_every=1, buffers=None, preset="paper",
                                   bn_update_batches=None, switch_every=1,
                                   switch_start=1, switch_unit="epoch", switch_end=None, switch_blend=0.5)),
}

@pytest.mark.parametrize("method", sorted(EXPECTED))
def test_config_passes_documented_arguments(method, tmp_path):
    cfg, run_dir = compose_run("quick/classification", method, 0, str(tmp_path), FAST)
    cls, expected = EXPECTED[method]
    assert method_kwargs(cfg.method, 78) == expected
    assert run_dir.parts[-2:] == (method, "seed0")
    avg, _ = build_averager(cfg.method, torch.nn.Linear(2, 2), 78)
    assert type(avg) is cls
    if method == "sema_blend":
        assert avg.switch_blend == 0.5


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_method_composes_and_builds_for_every_task(task, tmp_path):
    for method in METHODS:
        cfg, _ = compose_run(f"smoke/{task}", method, 0, str(tmp_path), FAST)
        avg, _ = build_averager(cfg.method, torch.nn.Linear(2, 2), 10)
        assert isinstance(avg, sema.WeightAverager), (task, method)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lookahead", "lawa", "bema", "power_ema", "sema_blend"])
def test_smoke_run_completes(method, tmp_path):
    from benchmarks import engine

    cfg, run_dir = compose_run("smoke/classification", method, 0, str(tmp_path), FAST)
    engine.run(cfg, run_dir)
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "completed", result["error"]
    assert result["method"] == method and result["final"]["top1"] > 0
    assert result["method_kwargs"] == method_kwargs(cfg.method, 8)  # exactly what the constructor received
    assert (run_dir / "weights" / "average.safetensors").exists()
