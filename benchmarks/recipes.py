"""The recipes: one complete config file per (task, scale) and per paper recipe, listed here.

    sema-bench recipe=quick/classification method=sema        # a recipe plus a method (plus overrides)
    sema-bench --list                                          # this registry, the methods and the tasks
    cfg, run_dir = compose_run("quick/classification", "sema", seed=0, out_dir="runs")

A recipe lives in `configs/recipe/<profile>/<name>.yaml` and fills `profile`, `task` (attaching the task's
schema with `- /schema/task/<task>@task`), `trainer`, `optim` and `averaging`. `<profile>/<task>` is the task's
standard recipe at that scale (the suite runs those); further recipes of a task are named after their dataset and
model. A new recipe is one file plus one line in `RECIPES`.

Rule: a recipe never writes into the method's node. `check_recipe_files` (run before every composition) refuses
one that does, naming the key and the file; the run-length dependent averaging values go under `averaging:`,
which every method reads as its defaults (benchmarks/methods.py).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence


CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
RECIPE_DIR = CONFIG_DIR / "recipe"


@dataclass(frozen=True)
class Recipe:
    task: str  # the benchmarks.tasks.TASKS entry it trains
    summary: str  # one line for `sema-bench --list`


# name (= configs/recipe/<name>.yaml) -> Recipe. One line per recipe.
RECIPES: dict[str, Recipe] = {
    "smoke/classification": Recipe("classification", "sklearn digits 8x8, tiny CNN, 2 epochs x 8 steps"),
    "smoke/ssl": Recipe("ssl", "BYOL on Fashion-MNIST, tiny CNN, 2 epochs x 4 steps; k-NN and linear probes"),
    "smoke/regression": Recipe("regression", "RCF-MNIST rotation angle, tiny CNN, 2 epochs x 4 steps"),
    "smoke/video": Recipe("video", "Moving MNIST 10->10 frames, CPU SimVP, 2 epochs x 2 steps"),
    "smoke/detection": Recipe("detection", "procedural COCO scenes, RetinaNet R18-FPN, 2 epochs x 4 steps"),
    "smoke/segmentation": Recipe("segmentation", "procedural scenes, FPN R18, 2 epochs x 2 steps"),
    "smoke/generation": Recipe("generation", "DDPM on Fashion-MNIST, tiny U-Net, 2 epochs x 2 steps"),
    "smoke/lm": Recipe("lm", "tiny GPT on Jane Austen, 2 epochs x 4 steps"),
    "quick/classification": Recipe("classification", "Fashion-MNIST 10k, tiny CNN, 8 epochs x 78 steps, SGD"),
    "quick/ssl": Recipe("ssl", "BYOL on Fashion-MNIST 6.4k, small CNN, 6 epochs; linear probe"),
    "quick/regression": Recipe("regression", "RCF-MNIST rotation angle, small CNN, 8 epochs"),
    "quick/video": Recipe("video", "Moving MNIST 10->10 frames, CPU SimVP, 8 epochs"),
    "quick/detection": Recipe("detection", "procedural COCO scenes, FCOS R18-FPN with GroupNorm, 8 epochs"),
    "quick/segmentation": Recipe("segmentation", "procedural scenes, FPN R18, 8 epochs, mIoU"),
    "quick/generation": Recipe("generation", "DDPM on Fashion-MNIST, tiny U-Net, 4 epochs x 50 steps, proxy FID"),
    "quick/lm": Recipe("lm", "tiny GPT on Jane Austen, 6 epochs x 100 steps, perplexity"),
    "paper/classification": Recipe("classification", "CIFAR-100, ResNet-18 (CIFAR stem), 200 epochs SGD"),
    "paper/cifar100_resnet50": Recipe("classification", "CIFAR-100, ResNet-50 (CIFAR stem), 200 epochs SGD"),
    "paper/cifar100_resnet101": Recipe("classification", "CIFAR-100, ResNet-101, 200 epochs SGD"),
    "paper/cifar100_resnext50": Recipe("classification", "CIFAR-100, ResNeXt-50 32x4d, 200 epochs SGD"),
    "paper/cifar100_wrn28_10": Recipe("classification", "CIFAR-100, WRN-28-10, 200 epochs SGD (lr 0.03, wd 1e-3)"),
    "paper/cifar100_densenet121": Recipe("classification", "CIFAR-100, DenseNet-121, 200 epochs SGD"),
    "paper/cifar100_convnext_tiny": Recipe("classification", "CIFAR-100, ConvNeXt-T, 200 epochs AdamW + RandAugment"),
    "paper/cifar100_convnext_small": Recipe("classification", "CIFAR-100, ConvNeXt-S, 200 epochs AdamW + RandAugment"),
    "paper/cifar100_deit_small": Recipe("classification", "CIFAR-100, DeiT-S at 224, 200 epochs AdamW + RandAugment"),
    "paper/cifar100_swin_tiny": Recipe("classification", "CIFAR-100, Swin-T at 224, 200 epochs AdamW + RandAugment"),
    "paper/cifar100_mixer_small": Recipe("classification", "CIFAR-100, MLP-Mixer-S at 224, 200 epochs AdamW + RandAugment"),
    "paper/imagenet_mobileone_s0": Recipe("classification", "ImageNet-1K, MobileOne-S0, 300 epochs SGD (4 GPUs x 64)"),
    "paper/imagenet_convnext_tiny": Recipe("classification", "ImageNet-1K, ConvNeXt-T, 300 epochs AdamW, mixup/cutmix "
                                           "(8 GPUs x 256 x 2 accumulated)"),
    "paper/imagenet_convnext_small": Recipe("classification", "ImageNet-1K, ConvNeXt-S, 300 epochs AdamW, mixup/cutmix "
                                            "(8 GPUs x 128 x 4 accumulated)"),
    "paper/imagenet_deit_small": Recipe("classification", "ImageNet-1K, DeiT-S, 300 epochs AdamW, mixup/cutmix "
                                        "(8 GPUs x 128)"),
    "paper/ssl": Recipe("ssl", "BYOL on CIFAR-10, ResNet-18 at 224 px, 1000 epochs LARS (8 GPUs x 256 x 2); probes"),
    "paper/ssl_mocov2": Recipe("ssl", "MoCo v2 on CIFAR-10, ResNet-18 at 224 px, 1000 epochs SGD (4 GPUs x 64); probes"),
    "paper/regression": Recipe("regression", "RCF-MNIST rotation angle, ResNet-18, 400 epochs"),
    "paper/agedb_resnet50": Recipe("regression", "AgeDB ages, ResNet-50 at 224, 400 epochs AdamW (4 GPUs x 64)"),
    "paper/imdb_wiki_resnet50": Recipe("regression", "IMDB-WIKI ages, ResNet-50 at 224, 200 epochs AdamW (4 x 64)"),
    "paper/video": Recipe("video", "Moving MNIST, SimVP (OpenSTL size), 200 epochs"),
    "paper/detection": Recipe("detection", "COCO 2017, Mask R-CNN R50-FPN, 1x schedule (12 epochs)"),
    "paper/detection_retinanet": Recipe("detection", "COCO 2017, RetinaNet R50-FPN, 1x schedule (12 epochs)"),
    "paper/segmentation": Recipe("segmentation", "ADE20K, DeepLabV3 R50, 64 epochs, sliding-window mIoU"),
    "paper/generation": Recipe("generation", "DDPM on CIFAR-10, U-Net, 2048 epochs, FID"),
    "paper/generation_celeba": Recipe("generation", "DDPM on CelebA 64x64, the DDIM CelebA-64 U-Net (78.7M), 500k steps; "
                                      "FID vs train, 50k samples"),
    "paper/lm": Recipe("lm", "GPT-2 124M on a local text corpus, 20 epochs x 5000 steps"),
    "paper/lm_gpt2_medium": Recipe("lm", "GPT-2 medium (355M) on a local corpus, one 80 GB GPU, grad accumulation"),
    "paper/lm_llama_7b": Recipe("lm", "Llama-7B shape on a local corpus, FSDP2 over 8 GPUs, sharded average"),
}


def standard(task: str, profile: str) -> str:
    """The standard recipe of `task` at `profile`: `<profile>/<task>`."""
    name = f"{profile}/{task}"
    if name not in RECIPES:
        raise ValueError(f"no recipe {name!r}; recipes: {', '.join(RECIPES)}")
    return name


def check_recipe_name(name: str) -> None:
    """ValueError listing the recipes when `name` is not one."""
    if name not in RECIPES:
        close = [r for r in RECIPES if name.split("/")[-1] in r]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"recipe={name!r} is not a recipe{hint}; choose one of: {', '.join(RECIPES)} "
                         "(sema-bench --list describes them)")


def check_recipe_files(recipe_dir: Path = RECIPE_DIR) -> None:
    """Refuse a recipe file that writes into the method's node (or is not in RECIPES, or lacks its own profile)."""
    import yaml

    for path in sorted(recipe_dir.rglob("*.yaml")):
        name = path.relative_to(recipe_dir).with_suffix("").as_posix()
        where = f"configs/recipe/{name}.yaml"
        content = yaml.safe_load(path.read_text()) or {}
        for key in ("method", "hydra"):
            if key in content:
                first = next(iter(content[key] or {"": None}))
                raise ValueError(
                    f"{where} writes {key}.{first}: a recipe may not set another node's fields (it would silently "
                    f"replace the method file's value). Put run-length dependent averaging values under "
                    f"averaging: (decay, warmup_epochs, switch_start, tail_start), which every method reads as its defaults.")
        if name not in RECIPES:
            raise ValueError(f"{where} is not listed in benchmarks/recipes.py::RECIPES; add one line there")
        profile = name.split("/")[0]
        if content.get("profile") != profile:
            raise ValueError(f"{where} sets profile={content.get('profile')!r}; a recipe under {profile}/ must set "
                             f"profile: {profile}")


MAX_VARIANT_CHARS = 120  # run directories: a longer override list is cut (at a comma) and suffixed with its hash


def variant_dirname(overrides: str) -> str:
    """The run directory's last part: Hydra's override_dirname as it is when short, else its first overrides up to
    MAX_VARIANT_CHARS and "~" + the first 12 hex digits of the SHA-1 of the whole string (file systems allow 255
    bytes per name; the run's config.yaml keeps every override)."""
    import hashlib

    if len(overrides) <= MAX_VARIANT_CHARS:
        return overrides
    cut = overrides[:MAX_VARIANT_CHARS].rsplit(",", 1)[0]
    return f"{cut}~{hashlib.sha1(overrides.encode()).hexdigest()[:12]}"


def register_configs() -> None:
    """Store every schema in Hydra's ConfigStore and the run-directory resolver (idempotent; called before Hydra
    composes a config)."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("variant_dirname"):
        OmegaConf.register_new_resolver("variant_dirname", variant_dirname)

    from benchmarks import methods
    from benchmarks.config import Config
    from benchmarks.tasks import TASKS

    check_recipe_files()
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    methods.register(cs, CONFIG_DIR / "method")
    for name, module_path in TASKS.items():
        try:
            module = importlib.import_module(module_path)
        except ModuleNotFoundError as err:
            if err.name == module_path:  # the task is registered but not written yet: it cannot be chosen
                continue
            raise
        cs.store(group="schema/task", name=name, node=module.Config)


def compose(overrides: Sequence[str]) -> tuple[Any, Path]:
    """The composed config (without the hydra node) and run directory for command-line style overrides
    (`recipe=...`, `method=...`, `key=value`), exactly as `sema-bench <overrides>` composes them."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import open_dict

    for item in overrides:
        if item.startswith("recipe="):
            check_recipe_name(item.split("=", 1)[1])
    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    if GlobalHydra.instance().is_initialized():  # inside a Hydra app (sema-bench composing its riders)
        cfg = hydra_compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
    else:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = hydra_compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
    run_dir = Path(str(cfg.hydra.run.dir))
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, run_dir


def compose_run(recipe: str, method: str, seed: int, out_dir: str,
                extra: Sequence[str] = ()) -> tuple[Any, Path]:
    """The composed config of one run (without the hydra node) and its run directory, as `sema-bench` makes them."""
    check_recipe_name(recipe)
    return compose([f"recipe={recipe}", f"method={method}", f"seed={seed}", f"out_dir={out_dir}", *extra])
