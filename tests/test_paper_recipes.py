"""The paper's recipes: docs/paper_recipes.md states, row by row, the value each composed recipe has (so the table
and the recipes cannot drift), every CIFAR-100 recipe has its table, and each recipe has a CPU twin that runs
the same code path (its transforms, its model family, its evaluation) for two steps on tiny CIFAR-100 files in the
official format."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from benchmarks.recipes import RECIPES, compose_run

DOC = Path(__file__).resolve().parents[1] / "docs" / "paper_recipes.md"
ROW = re.compile(r"^\| `([a-z_0-9.]+)` \| .*? \| `([^`]*)` \| .*\|$")


def tables() -> dict[str, list[tuple[str, str]]]:
    """recipe -> [(config key, our value as written)] from docs/paper_recipes.md."""
    out: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in DOC.read_text().splitlines():
        heading = re.match(r"^## (paper/\S+)$", line)
        if heading:
            current = heading.group(1)
            out[current] = []
        elif current and (row := ROW.match(line)):
            out[current].append((row.group(1), row.group(2)))
    return out


CIFAR = sorted(r for r, recipe in RECIPES.items()
               if r.startswith("paper/") and recipe.task == "classification" and "imagenet" not in r)
PAPER = sorted(r for r in RECIPES if r.startswith("paper/"))


def test_every_paper_recipe_has_its_table():
    assert sorted(tables()) == PAPER  # a new recipe comes with its table
    assert all(len(rows) >= 20 for recipe, rows in tables().items() if recipe in CIFAR)
    assert all(len(rows) >= 10 for rows in tables().values())


def _same(value, expected) -> bool:
    if isinstance(expected, float) or isinstance(value, float):
        return value is not None and expected is not None and math.isclose(float(value), float(expected))
    return value == expected


@pytest.mark.parametrize("recipe", PAPER)
def test_the_table_states_the_composed_recipes_values(recipe, tmp_path):
    cfg, _ = compose_run(recipe, "sema", 0, str(tmp_path))
    wrong = []
    for key, ours in tables()[recipe]:
        value = OmegaConf.select(cfg, key, default="<missing>")
        value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
        expected = yaml.safe_load(ours)
        if not _same(value, expected):
            wrong.append(f"{key}: table says {ours!r}, the recipe has {value!r}")
    assert not wrong, f"docs/paper_recipes.md and configs/recipe/{recipe}.yaml disagree:\n" + "\n".join(wrong)


# recipe -> the model its CPU twin trains: the same family at a tiny size (None: the recipe's own model, cheap here)
TWINS = {
    "paper/classification": None,
    "paper/cifar100_resnet50": "resnet26",
    "paper/cifar100_resnet101": "resnet26",
    "paper/cifar100_resnext50": None,
    "paper/cifar100_wrn28_10": "wrn10_1_openmixup",
    "paper/cifar100_densenet121": None,
    "paper/cifar100_convnext_tiny": "convnext_atto",
    "paper/cifar100_convnext_small": "convnext_atto",
    "paper/cifar100_deit_small": "deit_tiny_patch16_224",
    "paper/cifar100_swin_tiny": None,
    "paper/cifar100_mixer_small": None,
}


def test_every_cifar100_recipe_has_a_twin():
    assert sorted(TWINS) == CIFAR


@pytest.mark.slow
@pytest.mark.parametrize("recipe", CIFAR)
def test_the_cpu_twin_runs_the_recipes_code_path(recipe, tmp_path):
    from fixture_writers import write_cifar100

    from benchmarks import engine

    write_cifar100(tmp_path / "data", n_train=8, n_test=4)
    extra = ["logger.wandb.mode=disabled", "trainer.num_threads=1", "trainer.device=cpu", "trainer.epochs=1",
             "trainer.max_steps_per_epoch=2", "task.batch_size=4", "task.eval_batch_size=4", "task.num_workers=0",
             f"task.data_root={tmp_path / 'data'}", "optim.lr_scaling=linear"]
    if TWINS[recipe]:
        extra.append(f"task.model={TWINS[recipe]}")
    cfg, run_dir = compose_run(recipe, "sema", 0, str(tmp_path / "runs"), extra)
    result = engine.run(cfg, run_dir)
    assert result["status"] == "completed" and result["dataset"] == "cifar100"
    assert math.isfinite(result["history"][-1]["train_loss"]) and "top1" in result["final"]
    assert result["median_last_k"] == 1  # one evaluation: the median of the last 10 is over it alone


AGE_RECIPES = {"paper/agedb_resnet50": "agedb.csv", "paper/imdb_wiki_resnet50": "imdb_wiki.csv"}


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(AGE_RECIPES))
def test_the_age_recipes_cpu_twin_runs_their_code_path(recipe, tmp_path):
    from fixture_writers import write_age_csv

    from benchmarks import engine

    rows = [(f"faces/{i}.png", 20 + 5 * i, "train") for i in range(8)] + [("faces/t0.png", 33, "test"),
                                                                          ("faces/t1.png", 61, "test")]
    write_age_csv(tmp_path / "data", rows, name=AGE_RECIPES[recipe], size=40)
    extra = ["logger.wandb.mode=disabled", "trainer.num_threads=1", "trainer.device=cpu", "trainer.epochs=1",
             "trainer.max_steps_per_epoch=2", "task.batch_size=4", "task.eval_batch_size=4", "task.num_workers=0",
             f"task.data_root={tmp_path / 'data'}", "task.model=resnet18"]
    cfg, run_dir = compose_run(recipe, "sema", 0, str(tmp_path / "runs"), extra)
    result = engine.run(cfg, run_dir)
    assert result["status"] == "completed" and math.isfinite(result["final"]["mae"])
    assert result["runtime"]["peak_lr"] == pytest.approx(1e-3 * 4 / 256)  # the configs' lr is for batch 256


IMAGENET = sorted(r for r in RECIPES if r.startswith("paper/imagenet_"))
# The twins: the recipe's family at its smallest timm size, 96 px (no CIFAR stem), the recipe's transforms, mixing,
# optimizer groups and evaluation; accumulation kept at 2 micro-batches where the recipe accumulates.
IMAGENET_TWINS = {"paper/imagenet_mobileone_s0": None, "paper/imagenet_convnext_tiny": "convnext_atto",
                  "paper/imagenet_convnext_small": "convnext_atto", "paper/imagenet_deit_small": "deit_tiny_patch16_224"}


def test_every_imagenet_recipe_has_a_twin():
    assert sorted(IMAGENET_TWINS) == IMAGENET


@pytest.mark.slow
@pytest.mark.parametrize("recipe", IMAGENET)
def test_the_imagenet_recipes_cpu_twin_runs_its_code_path(recipe, tmp_path):
    from fixture_writers import write_imagenet

    from benchmarks import engine

    write_imagenet(tmp_path / "data", per_class=4)
    extra = ["logger.wandb.mode=disabled", "trainer.num_threads=1", "trainer.device=cpu", "trainer.epochs=1",
             "trainer.max_steps_per_epoch=2", "task.batch_size=2", "task.eval_batch_size=4", "task.num_workers=0",
             f"task.data_root={tmp_path / 'data'}", "trainer.amp=off", "optim.lr_scaling=linear"]
    if IMAGENET_TWINS[recipe]:
        extra += [f"task.model={IMAGENET_TWINS[recipe]}", "task.image_size=96"]
    cfg, run_dir = compose_run(recipe, "sema", 0, str(tmp_path / "runs"), extra)
    accum = cfg.trainer.grad_accum_steps
    if accum > 2:
        cfg.trainer.grad_accum_steps = accum = 2
    result = engine.run(cfg, run_dir)
    assert result["status"] == "completed" and result["dataset"] == "imagenet"
    assert math.isfinite(result["history"][-1]["train_loss"]) and "top1" in result["final"]
    assert result["runtime"]["global_batch"] == 2 * accum
