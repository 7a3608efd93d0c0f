"""Config composition: recipes x methods, the documented keys, and rejection of bad names and values."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf.errors import ConfigKeyError, ValidationError

import yaml

from benchmarks.config import validate
from benchmarks.methods import choices
from benchmarks.config import PROFILES
from benchmarks.recipes import CONFIG_DIR, RECIPE_DIR, RECIPES, compose_run
from benchmarks.tasks import TASKS


METHODS = sorted(choices(CONFIG_DIR / "method"))


def test_the_core_methods_are_there():
    assert {"baseline", "ema", "sema", "swa", "sema_paper", "sema_openmixup", "sema_mmdet"} <= set(METHODS)


def test_every_recipe_file_is_registered_and_every_registered_recipe_has_a_file():
    files = {p.relative_to(RECIPE_DIR).with_suffix("").as_posix() for p in RECIPE_DIR.rglob("*.yaml")}
    assert files == set(RECIPES)
    for task in TASKS:  # every task has a smoke recipe (its tests) and a quick one (the main job)
        assert f"smoke/{task}" in RECIPES and f"quick/{task}" in RECIPES, task
    assert {r.split("/")[0] for r in RECIPES} <= set(PROFILES)


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_every_recipe_composes_names_its_command_and_sets_its_own_nodes_only(tmp_path, recipe):
    cfg, run_dir = compose_run(recipe, "sema", 3, str(tmp_path))
    validate(cfg)
    profile = recipe.split("/")[0]
    assert cfg.profile == profile and cfg.task.name == RECIPES[recipe].task
    assert run_dir == tmp_path / recipe / "sema" / "seed3"
    assert cfg.logger.wandb.mode == "offline"  # offline by default: never needs a network
    assert cfg.method.decay == cfg.averaging.decay  # the recipe's averaging values are the method's defaults
    text = (RECIPE_DIR / f"{recipe}.yaml").read_text()
    assert f"recipe={recipe}" in text.split("defaults:")[0]  # the header names the command that runs it
    content = yaml.safe_load(text)
    assert set(content) <= {"defaults", "profile", "task", "trainer", "optim", "logger", "averaging"}


@pytest.mark.parametrize("profile", ["smoke", "quick", "paper"])
@pytest.mark.parametrize("method", METHODS)
def test_every_method_composes_at_every_profile(tmp_path, profile, method):
    cfg, run_dir = compose_run(f"{profile}/classification", method, 3, str(tmp_path))
    validate(cfg)
    assert run_dir == tmp_path / profile / "classification" / method / "seed3"
    assert cfg.profile == profile and cfg.method.name == method and cfg.seed == 3
    assert cfg.logger.wandb.group == f"classification/{profile}"


def test_paper_scale_is_the_cifar100_recipe(tmp_path):
    cfg, _ = compose_run("paper/classification", "sema", 0, str(tmp_path))
    assert (cfg.task.dataset, cfg.task.model, cfg.task.batch_size, cfg.trainer.epochs) == ("cifar100", "resnet18", 100, 200)
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == ("sgd", 0.1, 0.9, 1e-4)
    assert (cfg.method.decay, cfg.method.warmup_epochs, cfg.method.switch_start, cfg.method.switch_every) == (
        0.999, 5, 5, 1)
    assert cfg.trainer.amp == "off"  # the official CIFAR CNN configs train in float32


@pytest.mark.parametrize("recipe, model, optim, decay", [
    ("paper/classification", "resnet18", "sgd", 0.999),
    ("paper/cifar100_resnet50", "resnet50", "sgd", 0.999),
    ("paper/cifar100_deit_small", "deit_small_patch16_224", "adamw", 0.9999),
    ("paper/cifar100_convnext_tiny", "convnext_tiny", "adamw", 0.9999),
])
def test_cifar100_recipes(tmp_path, recipe, model, optim, decay):
    cfg, run_dir = compose_run(recipe, "sema", 0, str(tmp_path))
    validate(cfg)
    assert (cfg.profile, cfg.task.dataset, cfg.task.model, cfg.optim.name, cfg.method.decay) == (
        "paper", "cifar100", model, optim, decay)
    assert cfg.trainer.epochs == 200 and cfg.task.batch_size == 100 and cfg.optim.schedule == "cosine"
    assert cfg.task.num_workers == 4
    if optim == "adamw":
        assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.warmup_epochs) == (1e-3, 0.05, 5)
    assert run_dir == tmp_path / recipe / "sema" / "seed0"


def test_a_sweep_over_recipes_gives_each_recipe_its_own_directory(tmp_path):
    dirs = {compose_run(recipe, "ema", 0, str(tmp_path))[1] for recipe in RECIPES}
    assert len(dirs) == len(RECIPES)  # no two recipes share a run directory (a sweep over recipes is safe)


def test_overrides_that_change_results_get_their_own_directory(tmp_path):
    _, plain = compose_run("smoke/classification", "ema", 0, str(tmp_path), ["logger.wandb.mode=disabled"])
    _, changed = compose_run("smoke/classification", "ema", 0, str(tmp_path), ["optim.lr=0.2"])
    assert plain == tmp_path / "smoke" / "classification" / "ema" / "seed0"
    assert changed == plain / "optim.lr=0.2"


def test_unknown_recipes_and_methods_list_the_available_ones(tmp_path):
    with pytest.raises(ValueError, match=r"recipe='quick/segmentaton' is not a recipe.*choose one of: smoke/classification"):
        compose_run("quick/segmentaton", "sema", 0, str(tmp_path))
    with pytest.raises((MissingConfigException, ConfigCompositionException)) as err:
        compose_run("smoke/classification", "sgdr", 0, str(tmp_path))
    message = str(err.value)
    assert "Could not find 'method/sgdr'" in message and "baseline" in message and "sema_paper" in message


def test_unknown_keys_and_wrong_types_are_rejected(tmp_path):
    with pytest.raises(ConfigCompositionException, match="trainer.epoch"):
        compose_run("smoke/classification", "sema", 0, str(tmp_path), ["trainer.epoch=3"])
    with pytest.raises(ConfigCompositionException) as err:
        compose_run("smoke/classification", "sema", 0, str(tmp_path), ["trainer.epochs=many"])
    assert isinstance(err.value.__cause__, (ValidationError, ConfigKeyError)) or "many" in str(err.value)


@pytest.mark.parametrize("override, message", [
    ("optim.name=lion", "optim.name='lion' is not allowed; choose one of: sgd, adamw, adam, lars"),
    ("optim.schedule=linear",
     "optim.schedule='linear' is not allowed; choose one of: cosine, constant, multistep, onecycle, poly"),
    ("trainer.amp=fp8", "trainer.amp='fp8' is not allowed; choose one of: auto, off, bf16, fp16"),
    ("trainer.device=tpu", "trainer.device='tpu' is not allowed; choose one of: auto, cpu, cuda"),
    ("logger.wandb.mode=cloud", "logger.wandb.mode='cloud' is not allowed; choose one of: offline, online, disabled"),
    ("method.switch_unit=iter", "method.switch_unit='iter' is not supported; allowed: 'epoch', 'step'"),
    ("method.warmup=cubic", "method.warmup='cubic' is not supported; allowed: 'none', 'linear', 'exp', 'power', "
                            "'mmdet_linear', 'mmdet_exp'"),
    ("averaging.switch_start=-1", "averaging.switch_start=-1.0 is not allowed; it must be a finite number >= 0"),
    ("optim.lr=-1", "optim.lr=-1.0 is not allowed; it must be a finite number > 0"),
    ("trainer.epochs=0", "trainer.epochs=0 is not allowed; it must be a finite number > 0"),
])
def test_invalid_values_name_the_key_and_the_allowed_values(tmp_path, override, message):
    cfg, _ = compose_run("smoke/classification", "sema", 0, str(tmp_path), [override])
    with pytest.raises(ValueError) as err:
        validate(cfg)
    assert str(err.value) == message


def test_a_negative_epoch_count_of_a_method_is_named_in_epochs_not_steps(tmp_path):
    cfg, _ = compose_run("smoke/classification", "swa", 0, str(tmp_path), ["method.start_epochs=-1"])
    with pytest.raises(ValueError) as err:
        validate(cfg)
    assert str(err.value) == "method.start_epochs=-1.0 is not allowed; it must be a finite number of epochs >= 0"


@pytest.mark.parametrize("recipe", sorted(r for r in RECIPES if not r.startswith("smoke/")))
def test_quick_and_paper_recipes_start_the_tail_averages_three_quarters_in(recipe, tmp_path):
    """SWA's first average and BEMA's snapshot: 0.75 x trainer.epochs (the smoke recipes keep the methods' 0)."""
    cfg, _ = compose_run(recipe, "swa", 0, str(tmp_path), [])
    assert cfg.averaging.tail_start == cfg.method.start_epochs == 0.75 * cfg.trainer.epochs
    cfg, _ = compose_run(recipe, "bema", 0, str(tmp_path), [])
    assert cfg.method.burnin_epochs == 0.75 * cfg.trainer.epochs


@pytest.mark.parametrize("method,key", [("swa", "start_epochs"), ("bema", "burnin_epochs")])
def test_a_tail_that_starts_at_the_end_is_refused_with_the_key_to_change(method, key, tmp_path):
    cfg, _ = compose_run("quick/classification", method, 0, str(tmp_path), ["trainer.epochs=6"])
    with pytest.raises(ValueError) as err:
        validate(cfg)
    assert str(err.value) == (
        f"method.{key}=6.0 is not before the run's end (trainer.epochs=6), so {method} would never average; it "
        f"defaults to the recipe's averaging.tail_start: set averaging.tail_start (or method.{key}) to a value in "
        "[0, 6)")
    validate(compose_run("quick/classification", method, 0, str(tmp_path), ["trainer.epochs=6",
                                                                         "averaging.tail_start=4.5"])[0])
    validate(compose_run("quick/classification", "ema", 0, str(tmp_path), ["trainer.epochs=6"])[0])  # reads none


def test_slurm_launcher_config_composes_with_its_documented_keys(tmp_path):
    from hydra import compose, initialize_config_dir

    from benchmarks.recipes import register_configs
    from benchmarks.recipes import CONFIG_DIR

    register_configs()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="config", return_hydra_config=True,
                      overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=4"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.max_num_timeout) == ("gpu", 4, 5)


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_a_recipe_header_that_names_the_first_switch_names_the_right_one(recipe):
    """'SEMA switches ... from epoch N on' in a header must be the first epoch that ends with a switch."""
    import re

    text = (RECIPE_DIR / f"{recipe}.yaml").read_text()
    header = " ".join(line.lstrip("# ") for line in text.split("defaults:")[0].splitlines())
    start = yaml.safe_load(text)["averaging"]["switch_start"]
    for claimed in re.findall(r"SEMA switches[^.]*? from epoch (\d+)", header):
        assert int(claimed) == start + 1, (recipe, claimed, start)  # due(n) iff n > switch_start


def test_onecycle_refuses_a_separate_warm_up_and_bad_factors(tmp_path):
    from benchmarks.config import validate

    for extra, message in (("optim.warmup_epochs=1", "the one-cycle schedule rises on its own"),
                           ("optim.onecycle_pct=1.5", r"optim.onecycle_pct=1.5 must be in \(0, 1\)")):
        cfg, _ = compose_run("smoke/classification", "sema", 0, str(tmp_path), ["optim.schedule=onecycle", extra])
        with pytest.raises(ValueError, match=message):
            validate(cfg)


def test_a_data_root_that_does_not_exist_is_an_error_not_the_embedded_default(tmp_path):
    from benchmarks.config import validate

    cfg, _ = compose_run("smoke/classification", "sema", 0, str(tmp_path), [f"task.data_root={tmp_path / 'nope'}"])
    with pytest.raises(ValueError, match=r"task.data_root=.*nope does not exist; point it at the folder"):
        validate(cfg)
    cfg, _ = compose_run("smoke/classification", "sema", 0, str(tmp_path), [f"task.data_root={tmp_path}"])
    validate(cfg)  # an existing folder passes (the task then says which files it expects)
