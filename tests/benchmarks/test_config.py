"""Config composition: profiles x task scales, the documented keys, and rejection of bad names and values."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf.errors import ConfigKeyError, ValidationError

from benchmarks.config import validate
from benchmarks.suite import CONFIG_DIR, compose_run


METHODS = sorted(p.stem for p in CONFIG_DIR.joinpath("method").glob("*.yaml"))


def test_the_core_methods_are_there():
    assert {"baseline", "ema", "sema", "swa", "sema_paper", "sema_openmixup", "sema_mmdet"} <= set(METHODS)


@pytest.mark.parametrize("profile", ["smoke", "quick", "paper"])
@pytest.mark.parametrize("method", METHODS)
def test_every_method_composes_at_every_profile(tmp_path, profile, method):
    cfg, run_dir = compose_run("classification", method, profile, 3, str(tmp_path))
    validate(cfg)
    assert run_dir == tmp_path / profile / "classification" / method / "seed3"
    assert cfg.profile == profile and cfg.method.name == method and cfg.seed == 3
    assert cfg.logger.wandb.mode == "offline"  # offline by default: never needs a network
    assert cfg.logger.wandb.group == f"classification/{profile}"
    if cfg.method.averager in ("ema", "sema"):
        assert cfg.method.decay == cfg.task.ema_decay  # ${task.ema_decay}


def test_paper_scale_is_the_cifar100_recipe(tmp_path):
    cfg, _ = compose_run("classification", "sema", "paper", 0, str(tmp_path))
    assert (cfg.task.dataset, cfg.task.model, cfg.task.batch_size, cfg.trainer.epochs) == ("cifar100", "resnet18", 100, 200)
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == ("sgd", 0.1, 0.9, 1e-4)
    assert (cfg.method.decay, cfg.method.warmup_epochs, cfg.method.switch_start, cfg.method.switch_every) == (
        0.999, 5, 5, 1)


@pytest.mark.parametrize("experiment, model, optim, decay", [
    ("cifar100_resnet18", "resnet18", "sgd", 0.999),
    ("cifar100_resnet50", "resnet50", "sgd", 0.999),
    ("cifar100_deit_small", "deit_small_patch16_224", "adamw", 0.9999),
    ("cifar100_convnext_tiny", "convnext_tiny", "adamw", 0.9999),
])
def test_experiment_recipes(tmp_path, experiment, model, optim, decay):
    cfg, run_dir = compose_run("classification", "sema", "paper", 0, str(tmp_path), [f"+experiment={experiment}"])
    validate(cfg)
    assert (cfg.profile, cfg.task.dataset, cfg.task.model, cfg.optim.name, cfg.method.decay) == (
        "paper", "cifar100", model, optim, decay)
    assert cfg.trainer.epochs == 200 and cfg.task.batch_size == 100 and cfg.optim.schedule == "cosine"
    if optim == "adamw":
        assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.warmup_epochs) == (1e-3, 0.05, 5)
    assert run_dir.name == f"+experiment={experiment}"


def test_overrides_that_change_results_get_their_own_directory(tmp_path):
    _, plain = compose_run("classification", "ema", "smoke", 0, str(tmp_path), ["logger.wandb.mode=disabled"])
    _, changed = compose_run("classification", "ema", "smoke", 0, str(tmp_path), ["optim.lr=0.2"])
    assert plain == tmp_path / "smoke" / "classification" / "ema" / "seed0"
    assert changed == plain / "optim.lr=0.2"


@pytest.mark.parametrize("group, name", [("method", "sgdr"), ("profile", "huge"), ("task", "segmentaton")])
def test_unknown_group_choices_list_the_available_ones(tmp_path, group, name):
    args = {"task": "classification", "method": "sema", "profile": "smoke"}
    args[group] = name
    with pytest.raises((MissingConfigException, ConfigCompositionException)) as err:
        compose_run(args["task"], args["method"], args["profile"], 0, str(tmp_path))
    message = str(err.value)
    assert f"Could not find '{group}/{name}'" in message or f"'{name}'" in message
    if group == "method":
        assert "Available options in 'method'" in message and "baseline" in message and "sema" in message


def test_unknown_keys_and_wrong_types_are_rejected(tmp_path):
    with pytest.raises(ConfigCompositionException, match="trainer.epoch"):
        compose_run("classification", "sema", "smoke", 0, str(tmp_path), ["trainer.epoch=3"])
    with pytest.raises(ConfigCompositionException) as err:
        compose_run("classification", "sema", "smoke", 0, str(tmp_path), ["trainer.epochs=many"])
    assert isinstance(err.value.__cause__, (ValidationError, ConfigKeyError)) or "many" in str(err.value)


@pytest.mark.parametrize("override, message", [
    ("optim.name=lion", "optim.name='lion' is not allowed; choose one of: sgd, adamw, adam"),
    ("optim.schedule=linear", "optim.schedule='linear' is not allowed; choose one of: cosine, constant, multistep"),
    ("trainer.amp=fp8", "trainer.amp='fp8' is not allowed; choose one of: auto, off, bf16, fp16"),
    ("trainer.device=tpu", "trainer.device='tpu' is not allowed; choose one of: auto, cpu, cuda"),
    ("logger.wandb.mode=cloud", "logger.wandb.mode='cloud' is not allowed; choose one of: offline, online, disabled"),
    ("method.switch_unit=iter", "method.switch_unit='iter' is not allowed; choose one of: epoch, step"),
    ("optim.lr=-1", "optim.lr=-1.0 is not allowed; it must be a finite number > 0"),
    ("trainer.epochs=0", "trainer.epochs=0 is not allowed; it must be a finite number > 0"),
])
def test_invalid_values_name_the_key_and_the_allowed_values(tmp_path, override, message):
    cfg, _ = compose_run("classification", "sema", "smoke", 0, str(tmp_path), [override])
    with pytest.raises(ValueError) as err:
        validate(cfg)
    assert str(err.value) == message


def test_slurm_launcher_config_composes_with_its_documented_keys(tmp_path):
    from hydra import compose, initialize_config_dir

    from benchmarks.config import register_configs
    from benchmarks.suite import CONFIG_DIR

    register_configs()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="config", return_hydra_config=True,
                      overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=4"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.max_num_timeout) == ("gpu", 4, 5)
