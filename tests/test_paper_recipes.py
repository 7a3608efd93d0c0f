"""The paper's recipes: docs/paper_recipes.md states, row by row, the value each composed recipe has (so the table
and the recipes cannot drift), every recipe has its table, and each recipe has a twin that runs the same code path
(its transforms, its model family, its optimizer, its evaluation) for two steps on tiny files in the dataset's
official format, written by the test.

The twins run on the CPU. The GPU check (scripts/gpu_check.sh) runs them again with SEMA_TWIN_DEVICE=cuda and
SEMA_TWIN_FULL=1: then each twin keeps its recipe's own model at its own size (only the data, the batch and the
number of steps shrink), so every recipe's first steps run on a GPU whenever one is there."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch
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


def _cifar100(root: Path) -> Path:
    from fixture_writers import write_cifar100

    write_cifar100(root, n_train=8, n_test=4)
    return root


def _cifar10(root: Path) -> Path:
    from fixture_writers import write_cifar10

    write_cifar10(root, per_batch=4)
    return root


def _imagenet(root: Path) -> Path:
    from fixture_writers import write_imagenet

    write_imagenet(root, per_class=4)
    return root


def _age(name: str):
    def write(root: Path) -> Path:
        from fixture_writers import write_age_csv

        rows = [(f"faces/{i}.png", 20 + 5 * i, "train") for i in range(8)] + [("faces/t0.png", 33, "test"),
                                                                              ("faces/t1.png", 61, "test")]
        write_age_csv(root, rows, name=name, size=40)
        return root

    return write


def _coco(root: Path) -> Path:
    from fixture_writers import write_coco2017

    write_coco2017(root, size=64)
    return root


def _celeba(root: Path) -> Path:
    from fixture_writers import write_celeba

    write_celeba(root)
    return root


def _ade20k(root: Path) -> Path:
    from fixture_writers import write_ade20k

    write_ade20k(root, n_train=4, n_val=2, size=40)
    return root


def _moving_mnist(root: Path) -> Path:
    import numpy as np
    from fixture_writers import write_idx

    folder = root / "moving_mnist"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    write_idx(folder / "train-images-idx3-ubyte.gz", rng.integers(0, 255, (8, 28, 28)), gz=True)
    np.save(folder / "mnist_test_seq.npy", rng.integers(0, 255, (20, 4, 64, 64)).astype(np.uint8))  # [T, N, H, W]
    return root


def _corpus(root: Path) -> Path:
    import numpy as np

    root.mkdir(parents=True)
    words = np.random.default_rng(0).choice(["sema", "switch", "average", "weights", "flat", "sharp"], 12000)
    (root / "corpus.txt").write_text(" ".join(words))
    return root / "corpus.txt"


@dataclass(frozen=True)
class Twin:
    """How a recipe's twin runs: the fixture writer (returns task.data_root) and two override lists."""

    data: Callable[[Path], Path]
    shrink: tuple[str, ...] = ()  # the model at a tiny size (dropped with SEMA_TWIN_FULL=1: the recipe's own model)
    small: tuple[str, ...] = ()  # data, evaluation and batch sizes for the fixture (always applied)


CLS = ("task.batch_size=4", "task.eval_batch_size=4")
IMAGENET_SMALL = ("task.batch_size=2", "task.eval_batch_size=4")
TWINS: dict[str, Twin] = {
    "paper/classification": Twin(_cifar100, (), CLS),
    "paper/cifar100_resnet50": Twin(_cifar100, ("task.model=resnet26",), CLS),
    "paper/cifar100_resnet101": Twin(_cifar100, ("task.model=resnet26",), CLS),
    "paper/cifar100_resnext50": Twin(_cifar100, (), CLS),
    "paper/cifar100_wrn28_10": Twin(_cifar100, ("task.model=wrn10_1_openmixup",), CLS),
    "paper/cifar100_densenet121": Twin(_cifar100, (), CLS),
    "paper/cifar100_convnext_tiny": Twin(_cifar100, ("task.model=convnext_atto",), CLS),
    "paper/cifar100_convnext_small": Twin(_cifar100, ("task.model=convnext_atto",), CLS),
    "paper/cifar100_deit_small": Twin(_cifar100, ("task.model=deit_tiny_patch16_224",), CLS),
    "paper/cifar100_swin_tiny": Twin(_cifar100, (), CLS),
    "paper/cifar100_mixer_small": Twin(_cifar100, (), CLS),
    "paper/imagenet_mobileone_s0": Twin(_imagenet, (), IMAGENET_SMALL),
    "paper/imagenet_convnext_tiny": Twin(_imagenet, ("task.model=convnext_atto", "task.image_size=96"),
                                         IMAGENET_SMALL),
    "paper/imagenet_convnext_small": Twin(_imagenet, ("task.model=convnext_atto", "task.image_size=96"),
                                          IMAGENET_SMALL + ("trainer.grad_accum_steps=2",)),
    "paper/imagenet_deit_small": Twin(_imagenet, ("task.model=deit_tiny_patch16_224", "task.image_size=96"),
                                      IMAGENET_SMALL),
    "paper/agedb_resnet50": Twin(_age("agedb.csv"), ("task.model=resnet18",), CLS),
    "paper/imdb_wiki_resnet50": Twin(_age("imdb_wiki.csv"), ("task.model=resnet18",), CLS),
    "paper/regression": Twin(_cifar10, (), CLS + ("task.max_train_samples=64", "task.max_eval_samples=16")),
    "paper/ssl": Twin(_cifar10, ("task.image_size=96", "task.hidden_dim=64"),
                      ("task.batch_size=4", "task.eval_batch_size=8", "trainer.grad_accum_steps=2")),
    "paper/ssl_mocov2": Twin(_cifar10, ("task.image_size=96", "task.hidden_dim=64"),
                             ("task.batch_size=4", "task.eval_batch_size=8", "task.queue_size=16")),
    "paper/video": Twin(_moving_mnist, ("task.model=simvp_cpu",),
                        ("task.batch_size=2", "task.eval_batch_size=2", "task.train_length=8",
                         "task.test_sequences=4")),
    "paper/detection": Twin(_coco, ("task.model=maskrcnn_resnet18_fpn",),
                            ("task.batch_size=2", "task.eval_batch_size=1", "task.min_size=64", "task.max_size=64",
                             "task.detections_per_image=10")),
    "paper/detection_retinanet": Twin(_coco, ("task.model=retinanet_resnet18_fpn",),
                                      ("task.batch_size=2", "task.eval_batch_size=1", "task.min_size=64",
                                       "task.max_size=64", "task.detections_per_image=10")),
    "paper/segmentation": Twin(_ade20k, ("task.model=deeplabv3_mobilenet_v3_large",),
                               ("task.batch_size=2", "task.eval_batch_size=2", "task.input_size=32",
                                "task.eval_crop=32", "task.eval_stride=21")),
    "paper/generation": Twin(_cifar10, ("task.model=unet-tiny",),
                             ("task.batch_size=4", "task.eval_batch_size=4", "task.timesteps=20",
                              "task.sample_steps=3", "task.fid_samples=8", "task.fid_real_samples=8",
                              "task.proxy_train_samples=16", "task.grid_size=2", "task.max_eval_samples=4")),
    "paper/generation_celeba": Twin(_celeba, ("task.model=unet-tiny", "task.image_size=32"),
                                    ("task.batch_size=4", "task.eval_batch_size=4", "task.timesteps=20",
                                     "task.sample_steps=3", "task.fid_samples=8", "task.fid_real_samples=8",
                                     "task.proxy_train_samples=8", "task.grid_size=2", "task.max_eval_samples=4")),
    "paper/lm": Twin(_corpus, ("task.model=gpt-tiny",), ("task.batch_size=2", "task.eval_batch_size=2",
                                                          "task.block_size=32", "task.max_eval_samples=4")),
    "paper/lm_gpt2_medium": Twin(_corpus, ("task.model=gpt-tiny",),
                                 ("task.batch_size=2", "task.eval_batch_size=2", "task.block_size=32",
                                  "task.max_eval_samples=4")),
    # One process, llama-tiny even with SEMA_TWIN_FULL (7B needs 8 GPUs under FSDP2, which
    # tests/benchmarks/test_fsdp2_engine.py covers on 2 gloo ranks).
    "paper/lm_llama_7b": Twin(_corpus, (),
                              ("task.model=llama-tiny", "task.batch_size=2", "task.eval_batch_size=2",
                               "task.block_size=32", "task.max_eval_samples=4", "trainer.strategy=ddp",
                               "trainer.fsdp_param_dtype=null",
                               "trainer.activation_checkpointing=false")),
}
DEVICE = os.environ.get("SEMA_TWIN_DEVICE", "cpu")
FULL = os.environ.get("SEMA_TWIN_FULL") == "1"


def test_every_paper_recipe_has_a_twin():
    assert sorted(TWINS) == PAPER


@pytest.mark.slow
@pytest.mark.parametrize("recipe", PAPER)
def test_the_twin_runs_the_recipes_code_path(recipe, tmp_path, monkeypatch):
    from benchmarks import engine

    monkeypatch.setenv("SEMA_BENCH_CACHE", str(tmp_path / "cache"))
    twin = TWINS[recipe]
    data_root = twin.data(tmp_path / "data")
    extra = ["logger.wandb.mode=disabled", "trainer.num_threads=1", f"trainer.device={DEVICE}", "trainer.epochs=1",
             "trainer.max_steps_per_epoch=2", "task.num_workers=0", f"task.data_root={data_root}",
             "optim.lr_scaling=linear", *twin.small, *(() if FULL else twin.shrink)]
    if DEVICE == "cpu":
        extra.append("trainer.amp=off")  # fp16 autocast is a CUDA path
    cfg, run_dir = compose_run(recipe, "sema", 0, str(tmp_path / "runs"), extra)
    if cfg.trainer.grad_accum_steps > 2:  # keep accumulation, with 2 micro-batches of the fixture
        cfg.trainer.grad_accum_steps = 2
    if RECIPES[recipe].task == "detection":  # frozen BN needs a backbone file: torchvision's format, random weights
        import torchvision

        from benchmarks.tasks.detection import parse_model

        weights = tmp_path / "backbone.pth"
        torch.save(getattr(torchvision.models, parse_model(cfg.task.model)[1])().state_dict(), weights)
        cfg.task.backbone_weights = str(weights)
    result = engine.run(cfg, run_dir)
    assert result["status"] == "completed", result.get("error")
    assert math.isfinite(result["history"][-1]["train_loss"]) and result["headline"] in result["final"]
    runtime = result["runtime"]
    assert runtime["device"].startswith(DEVICE)
    # the recipe's lr is for its reference batch: the twin's global batch (one process) scales it linearly
    assert runtime["global_batch"] == cfg.task.batch_size * cfg.trainer.grad_accum_steps
    reference = cfg.optim.reference_batch or runtime["global_batch"]
    assert runtime["peak_lr"] == pytest.approx(cfg.optim.lr * runtime["global_batch"] / reference)
    assert result["median_last_k"] == 1  # one evaluation: the median of the last k is over it alone
