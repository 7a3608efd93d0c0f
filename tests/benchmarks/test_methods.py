"""Method config -> sema object: keyword conversion rules, and the optimizer-wrapping hook used by the engine."""

from __future__ import annotations

import types

import pytest
import sema
import torch
from torch import nn

from benchmarks import engine
from benchmarks.config import MethodConfig
from benchmarks.methods import averager_kwargs, build_averager
from benchmarks.suite import CONFIG_DIR, compose_run


def method(**fields) -> MethodConfig:
    return MethodConfig(**{"name": "m", "averager": "sema", "decay": 0.99, **fields})


def test_epoch_fields_become_steps():
    cfg = method(warmup="linear", warmup_epochs=2.5, warmup_ratio=0.9, switch_every=1, switch_start=3,
                 switch_unit="epoch")
    assert averager_kwargs(cfg, steps_per_epoch=10) == {
        "decay": 0.99, "warmup": "linear", "warmup_steps": 25, "warmup_ratio": 0.9, "switch_every": 1,
        "switch_start": 3, "switch_unit": "epoch"}


def test_step_unit_converts_switch_start_and_end_to_steps():
    cfg = method(switch_every=50, switch_start=1, switch_end=4, switch_unit="step")
    kwargs = averager_kwargs(cfg, steps_per_epoch=100)
    assert (kwargs["switch_every"], kwargs["switch_start"], kwargs["switch_end"]) == (50, 100, 400)


def test_epoch_unit_needs_whole_epochs():
    with pytest.raises(ValueError, match="switch_start=1.5 must be a whole number of epochs"):
        averager_kwargs(method(switch_every=1, switch_start=1.5, switch_unit="epoch"), 10)


def test_no_switch_every_drops_switch_fields_and_warmup_none_drops_warmup_fields():
    cfg = method(averager="ema", warmup="none", warmup_epochs=5, warmup_ratio=0.9, switch_start=5, buffers="copy")
    assert averager_kwargs(cfg, 10) == {"decay": 0.99, "buffers": "copy"}


@pytest.mark.parametrize("name, cls", [("ema", sema.EMA), ("sema", sema.SEMA), ("swa", sema.SWA)])
def test_core_yaml_methods_build_the_sema_classes(tmp_path, name, cls):
    cfg, _ = compose_run("classification", name, "quick", 0, str(tmp_path))
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    averager = build_averager(cfg.method, model, steps_per_epoch=78)
    assert type(averager) is cls
    if name == "sema":
        assert averager.cadence.start == 1 and averager.cadence.every == 1
        assert averager.schedule.warmup_steps == 78 and averager.schedule.decay == 0.99


def test_baseline_builds_nothing_and_unknown_averagers_list_the_registry(tmp_path):
    cfg, _ = compose_run("classification", "baseline", "smoke", 0, str(tmp_path))
    assert build_averager(cfg.method, nn.Linear(2, 2), 10) is None
    with pytest.raises(ValueError, match="method.averager='polyak' is not allowed; choose one of: ema, sema"):
        build_averager(method(averager="polyak"), nn.Linear(2, 2), 10)


class CountingLookahead:
    """A real (tiny) optimizer-wrapping method: plain EMA plus a wrapper counting optimizer steps."""

    def __init__(self, model, decay=0.9, **kwargs):
        self.ema = sema.EMA(model, decay=decay)
        self.steps = 0

    def wrap_optimizer(self, optimizer):
        original_step, method = optimizer.step, self

        def step(opt, *args, **kwargs):
            method.steps += 1
            return original_step(*args, **kwargs)

        optimizer.step = types.MethodType(step, optimizer)  # a bound method, as LR schedulers expect
        return optimizer

    def __getattr__(self, name):  # everything else: the EMA's protocol methods
        return getattr(self.ema, name)

    def state_dict(self):
        return {"ema": self.ema.state_dict(), "steps": self.steps}

    def load_state_dict(self, state):
        self.ema.load_state_dict(state["ema"])
        self.steps = state["steps"]


def test_engine_trains_with_the_optimizer_a_method_wraps(tmp_path, monkeypatch):
    monkeypatch.setitem(sema.METHODS, "counting_lookahead", CountingLookahead)
    cfg, run_dir = compose_run("classification", "ema", "smoke", 0, str(tmp_path),
                               ["method.averager=counting_lookahead", "method.warmup=none",
                                "logger.wandb.mode=disabled"])
    trainer = engine.Trainer(cfg, run_dir)
    assert isinstance(trainer.averager, CountingLookahead)
    trainer.train_epoch()
    assert trainer.averager.steps == trainer.global_step == 8
    assert torch.is_tensor(next(iter(trainer.averager.average.state_dict().values())))


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIG_DIR.joinpath("method").glob("*.yaml")))
def test_every_method_config_builds_its_averager(tmp_path, name):
    cfg, _ = compose_run("classification", name, "quick", 0, str(tmp_path))
    averager = build_averager(cfg.method, nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)), steps_per_epoch=78)
    if cfg.method.averager is None:
        assert averager is None
    else:
        assert type(averager) is sema.METHODS[cfg.method.averager]
        assert isinstance(averager, sema.WeightAverager)
