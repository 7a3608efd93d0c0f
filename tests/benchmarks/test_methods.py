"""Method config -> sema object: every registered method is one Settings dataclass whose kwargs() are what the
constructor receives; method files are the values in effect; the optimizer-wrapping hook used by the engine."""

from __future__ import annotations

import dataclasses
import shutil
import types

import pytest
import sema
import torch
import yaml
from hydra.errors import ConfigCompositionException
from torch import nn

from benchmarks import engine
from benchmarks.methods import BASELINE, build_averager, choices, method_kwargs, settings_of
from benchmarks.recipes import CONFIG_DIR, RECIPES, check_recipe_files, compose_run

METHOD_CHOICES = sorted(choices(CONFIG_DIR / "method"))
METHOD_FILES = sorted(p.stem for p in (CONFIG_DIR / "method").glob("*.yaml"))


def test_sema_settings_convert_epochs_to_steps_by_hand():
    s = sema.SEMA.Settings(decay=0.99, warmup_epochs=2.5, switch_start=3)
    assert s.kwargs(steps_per_epoch=10) == {
        "decay": 0.99, "warmup": None, "warmup_steps": 25, "warmup_ratio": 0.9, "warmup_power": 2 / 3,
        "warmup_gamma": None, "update_every": 1, "buffers": None, "preset": "paper", "bn_update_batches": None, "switch_every": 1,
        "switch_start": 3, "switch_unit": "epoch", "switch_end": None, "switch_blend": 1.0}


def test_step_unit_converts_switch_start_and_end_to_steps():
    kwargs = sema.SEMA.Settings(switch_every=50, switch_start=1, switch_end=4, switch_unit="step").kwargs(100)
    assert (kwargs["switch_every"], kwargs["switch_start"], kwargs["switch_end"]) == (50, 100, 400)


def test_epoch_unit_needs_whole_epochs():
    with pytest.raises(ValueError, match="switch_start=1.5 must be a whole number of epochs"):
        sema.SEMA.Settings(switch_start=1.5).kwargs(10)


@pytest.mark.parametrize("settings, key, steps", [
    (sema.SWA.Settings(start_epochs=6), "start_steps", 2346),  # round(6 * 391)
    (sema.BEMA.Settings(burnin_epochs=0.5), "burnin_steps", 196),  # round(0.5 * 391) = round(195.5)
    (sema.EMA.Settings(warmup_epochs=0.1), "warmup_steps", 39),  # round(39.1)
])
def test_the_epoch_fields_of_each_method_become_steps(settings, key, steps):
    assert settings.kwargs(steps_per_epoch=391)[key] == steps


def test_negative_epochs_are_refused_with_the_field_name():
    with pytest.raises(ValueError, match="start_epochs=-1 is not allowed"):
        sema.SWA.Settings(start_epochs=-1).kwargs(10)


def test_every_registered_method_has_settings_its_constructor_accepts():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    for key, cls in sema.METHODS.items():
        settings = cls.Settings()
        assert dataclasses.is_dataclass(settings), key
        averager = cls(model, **settings.kwargs(steps_per_epoch=7))
        assert isinstance(averager, sema.WeightAverager), key


@pytest.mark.parametrize("name", METHOD_CHOICES)
def test_every_method_choice_holds_only_its_own_settings_and_builds(tmp_path, name):
    cfg, run_dir = compose_run("quick/classification", name, 0, str(tmp_path))
    assert run_dir.parts[-2:] == (name, "seed0")
    averager, kwargs = build_averager(cfg.method, nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)), 78)
    if cfg.method.averager is None:
        assert name == BASELINE and averager is None and kwargs is None and set(cfg.method) == {"name", "averager"}
        return
    cls = sema.METHODS[cfg.method.averager]
    assert set(cfg.method) == {"name", "averager"} | {f.name for f in dataclasses.fields(cls.Settings)}
    assert type(averager) is cls and isinstance(averager, sema.WeightAverager)
    assert kwargs == settings_of(cfg.method).kwargs(78)


def test_swa_has_no_switch_fields(tmp_path):
    with pytest.raises(ConfigCompositionException, match="switch_unit"):
        compose_run("smoke/classification", "swa", 0, str(tmp_path), ["method.switch_unit=step"])


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_a_method_files_values_are_the_values_in_effect_for_every_recipe(tmp_path, recipe):
    for name in METHOD_FILES:
        written = {k: v for k, v in yaml.safe_load((CONFIG_DIR / "method" / f"{name}.yaml").read_text()).items()
                   if k != "defaults"}
        cfg, _ = compose_run(recipe, name, 0, str(tmp_path))
        for key, value in written.items():
            assert cfg.method[key] == value, (recipe, name, key)


def test_recipe_averaging_values_are_the_defaults_and_the_command_line_wins(tmp_path):
    cfg, _ = compose_run("quick/classification", "sema", 0, str(tmp_path))
    assert (cfg.method.decay, cfg.method.warmup_epochs, cfg.method.switch_start) == (0.99, 1, 1)
    assert (cfg.averaging.decay, cfg.averaging.warmup_epochs, cfg.averaging.switch_start) == (0.99, 1, 1)
    cfg, _ = compose_run("quick/classification", "sema", 0, str(tmp_path), ["method.switch_start=3"])
    assert cfg.method.switch_start == 3 and cfg.averaging.switch_start == 1


def test_a_new_method_file_sets_switch_start_at_every_scale(tmp_path):
    """The new user's experiment of issue 11: a method file saying switch_start: 3 gets 3 at smoke, quick and paper."""
    from hydra import compose, initialize_config_dir

    from benchmarks.recipes import register_configs

    configs = tmp_path / "configs"
    shutil.copytree(CONFIG_DIR, configs)
    (configs / "method" / "my_sema.yaml").write_text(
        "defaults:\n  - /schema/method/sema@_here_\n  - _self_\n\nname: my_sema\nswitch_start: 3\n")
    register_configs()
    got = []
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        for recipe in ("smoke/classification", "quick/classification", "paper/classification"):
            cfg = compose(config_name="config", overrides=[f"recipe={recipe}", "method=my_sema"])
            got.append(cfg.method.switch_start)
            assert method_kwargs(cfg.method, 10)["switch_start"] == 3
    assert got == [3, 3, 3]


def test_a_recipe_that_writes_into_the_method_is_refused_naming_key_and_file(tmp_path):
    bad = tmp_path / "quick"
    bad.mkdir()
    (bad / "classification.yaml").write_text("# @package _global_\nprofile: quick\nmethod:\n  switch_start: 1\n")
    with pytest.raises(ValueError, match=r"configs/recipe/quick/classification.yaml writes method.switch_start"):
        check_recipe_files(tmp_path)


def test_baseline_builds_nothing_and_unknown_averagers_list_the_registry(tmp_path):
    cfg, _ = compose_run("smoke/classification", "baseline", 0, str(tmp_path))
    assert build_averager(cfg.method, nn.Linear(2, 2), 10) == (None, None)
    with pytest.raises(ValueError, match="method.averager='polyak' is not allowed; choose one of: ema, sema"):
        build_averager({"name": "x", "averager": "polyak"}, nn.Linear(2, 2), 10)


class CountingLookahead:
    """A real (tiny) optimizer-wrapping method: plain EMA plus a wrapper counting optimizer steps."""

    Settings = sema.EMA.Settings

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
    cfg, run_dir = compose_run("smoke/classification", "ema", 0, str(tmp_path),
                               ["method.averager=counting_lookahead", "logger.wandb.mode=disabled"])
    trainer = engine.Trainer(cfg, run_dir)
    assert isinstance(trainer.averager, CountingLookahead)
    trainer.train_epoch()
    assert trainer.averager.steps == trainer.global_step == 8
    assert torch.is_tensor(next(iter(trainer.averager.average.state_dict().values())))


def test_plain_dicts_and_unknown_fields_get_clear_errors():
    from benchmarks.methods import check_method

    with pytest.raises(ValueError, match=r"^method.warmup='cubic'"):
        check_method({"name": "x", "averager": "ema", "warmup": "cubic"})
    with pytest.raises(ValueError, match=r"^method.foo is not a setting of averager='ema'"):
        check_method({"name": "x", "averager": "ema", "foo": 1})
