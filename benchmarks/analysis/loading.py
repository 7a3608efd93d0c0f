"""Rebuild a finished run from its run directory: task setup, final weights, a fixed list of analysis batches.

Contract (docs/ARCHITECTURE.md, "Run directory layout"): `result.json`, `.hydra/config.yaml`,
`weights/online.safetensors` (state dict of `TaskSetup.model`) and, for averaging methods,
`weights/average.safetensors` (state dict of `TaskSetup.averaged_module or TaskSetup.model`).

The analysed weights are always those of the averaged module (`averaged_module or model`), for both the online and
the averaged solution, so the two are measured in the same parameter space. The rest of the model (if the averaged
module is only a part of it) keeps the online weights.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from benchmarks.analysis.hessian import LossFn
from benchmarks.runtime import cache_dir as runtime_cache_dir
from benchmarks.runtime import to_device

ONLINE_WEIGHTS = Path("weights") / "online.safetensors"
AVERAGE_WEIGHTS = Path("weights") / "average.safetensors"
StateDict = dict[str, torch.Tensor]


def find_run_dirs(root: Path) -> list[Path]:
    """Every run directory at or under `root` (a folder holding result.json), sorted."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root} does not exist; pass a run directory or a sweep directory")
    if (root / "result.json").is_file():
        return [root]
    runs = sorted(path.parent for path in root.rglob("result.json"))
    if not runs:
        raise FileNotFoundError(f"no result.json at or under {root}; pass a run directory or a sweep directory")
    return runs


# Layers whose forward depends on train/eval mode through `self.training`.
_STOCHASTIC_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd, nn.MultiheadAttention)
_STOCHASTIC_NAMES = ("DropPath", "StochasticDepth")  # timm / torchvision stochastic depth


def freeze_stochastic_layers(model: nn.Module) -> None:
    """Train mode for the model, eval mode for BatchNorm (running statistics), dropout and stochastic depth.

    For tasks whose loss only exists in train mode (torchvision detectors return losses only when training).
    """
    model.train()
    for module in model.modules():
        if isinstance(module, _STOCHASTIC_LAYERS) or type(module).__name__ in _STOCHASTIC_NAMES:
            module.eval()


def choose_mode(model: nn.Module, loss_fn: LossFn, batch: Any) -> str:
    """"eval" (the whole model in eval mode) when the task's loss works that way, else "train-frozen-norm".

    Both keep BatchNorm on its running statistics, so the measured loss is a fixed function of the weights.
    """
    model.eval()
    try:
        with torch.no_grad():
            loss = loss_fn(model, batch)
        if torch.is_tensor(loss) and loss.dim() == 0 and torch.isfinite(loss):
            return "eval"
    except Exception:  # noqa: BLE001 - any failure means this loss needs train mode
        pass
    freeze_stochastic_layers(model)
    return "train-frozen-norm"


def set_mode(model: nn.Module, mode: str) -> None:
    if mode == "eval":
        model.eval()
    elif mode == "train-frozen-norm":
        freeze_stochastic_layers(model)
    else:
        raise ValueError(f"mode={mode!r} is not allowed; choose one of: eval, train-frozen-norm")


@dataclass
class LoadedRun:
    run_dir: Path
    result: dict  # result.json
    config: Any  # the run's resolved config (OmegaConf DictConfig)
    task: str  # task name
    method: str  # method name from result.json
    seed: int  # the run's training seed
    model: nn.Module  # TaskSetup.model, holding the online weights
    module: nn.Module  # the analysed part: TaskSetup.averaged_module or TaskSetup.model
    loss_fn: LossFn  # TaskSetup.train_loss
    evaluate: Any  # TaskSetup.evaluate (called in eval mode under no_grad)
    headline: str  # TaskSetup.headline
    batches: list  # the fixed analysis batches, already on the device
    online: StateDict  # state dict of `module` at the online weights
    average: Optional[StateDict]  # state dict of `module` at the averaged weights; None = no average saved
    mode: str  # "eval" or "train-frozen-norm" (see choose_mode)

    def load(self, state: StateDict) -> None:
        self.module.load_state_dict(state)

    def metric(self, model: nn.Module) -> float:
        """The task's headline metric of `model` as it is now (eval mode, no_grad), mode restored after."""
        model.eval()
        with torch.no_grad():
            value = float(self.evaluate(model)[self.headline])
        set_mode(model, self.mode)
        return value


def read_config(run_dir: Path, result: Optional[dict] = None):
    """The run's config: .hydra/config.yaml (interpolations resolved where they can be), else result.json's
    resolved "config" (runs made in process by `benchmarks.engine.run`, which Hydra did not launch)."""
    from omegaconf import OmegaConf

    path = Path(run_dir) / ".hydra" / "config.yaml"
    if not path.is_file():
        if result and isinstance(result.get("config"), dict) and "task" in result["config"]:
            return OmegaConf.create(result["config"])
        raise FileNotFoundError(
            f"{path} is missing and result.json has no config; "
            "sema-analyze needs the run's config to rebuild the task"
        )
    config = OmegaConf.load(path)
    try:
        return OmegaConf.create(OmegaConf.to_container(config, resolve=True))
    except Exception:  # noqa: BLE001 - e.g. ${hydra:...} interpolations outside a Hydra app; the task part suffices
        return config


def task_config(config):
    """The task's typed Config dataclass filled from the run's `task` section."""
    from omegaconf import OmegaConf

    from benchmarks.tasks import load_task

    module = load_task(str(config.task.name))
    merged = OmegaConf.merge(OmegaConf.structured(module.Config), config.task)
    return module, OmegaConf.to_object(merged)


def _load_weights(module: nn.Module, path: Path, device: torch.device) -> StateDict:
    """Load a safetensors state dict strictly; a key missing from the file is fine only if it is tied to a
    loaded one (safetensors' save_model drops the duplicate names of shared tensors, e.g. tied embeddings)."""
    from safetensors.torch import load_file

    state = load_file(str(path), device=str(device))
    missing, unexpected = module.load_state_dict(state, strict=False)
    storage = {key: value.data_ptr() for key, value in module.state_dict().items()}
    loaded = {storage[key] for key in state if key in storage}
    missing = [key for key in missing if storage[key] not in loaded]
    if unexpected or missing:
        raise ValueError(
            f"{path} does not match the rebuilt model: missing {sorted(missing)[:5]}, unexpected "
            f"{sorted(unexpected)[:5]}; was the run made with a different task config or code version?"
        )
    return {key: value.detach().clone() for key, value in module.state_dict().items()}


def analysis_batches(setup, config, num_batches: int, batch_size: Optional[int], seed: int, device) -> list:
    """TaskSetup.analysis_batches() or the first batches of an unshuffled training loader, made once, seeded.

    Training-set augmentation draws from torch's global RNG, which is seeded here, so the list is the same for every
    run of the task (and for online and averaged weights).
    """
    if num_batches < 1:
        raise ValueError(f"num_batches must be >= 1, got {num_batches}")
    torch.manual_seed(seed)
    if setup.analysis_batches is not None:
        batches = list(itertools.islice(iter(setup.analysis_batches()), num_batches))
    else:
        from torch.utils.data import DataLoader

        loader = DataLoader(
            setup.train_set,
            batch_size=batch_size or config.task.batch_size,
            shuffle=False,
            num_workers=0,
            collate_fn=setup.collate_fn,
        )
        batches = list(itertools.islice(iter(loader), num_batches))
    if not batches:
        raise ValueError("the task yielded no analysis batches (empty training set?)")
    return [to_device(batch, device) for batch in batches]


def load_run(
    run_dir: Path,
    num_batches: int = 4,
    batch_size: Optional[int] = None,
    seed: int = 0,
    device: str = "cpu",
    cache_dir: Optional[Path] = None,
) -> LoadedRun:
    """Rebuild the run's task, load its final weights and make the analysis batches."""
    from benchmarks.tasks.protocol import RunContext

    run_dir = Path(run_dir)
    result = json.loads((run_dir / "result.json").read_text())
    online_path = run_dir / ONLINE_WEIGHTS
    if not online_path.is_file():
        raise FileNotFoundError(f"{online_path} is missing (status {result.get('status')!r}); nothing to analyse")
    config = read_config(run_dir, result)
    task_module, task_cfg = task_config(config)
    torch_device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                "cpu" if device == "auto" else device)
    run_seed = int(result.get("seed", config.get("seed", 0)))
    torch.manual_seed(run_seed)
    context = RunContext(
        device=torch_device,
        seed=run_seed,
        out_dir=run_dir / "analysis",
        cache_dir=Path(cache_dir) if cache_dir else runtime_cache_dir(),
        profile=str(config.get("profile", result.get("profile", "quick"))),
        epochs=int(config.get("trainer", {}).get("epochs", 1)),
        batch_size=int(config.get("task", {}).get("batch_size", 1)),
        drop_last=bool(config.get("trainer", {}).get("drop_last", True)),
        max_steps_per_epoch=config.get("trainer", {}).get("max_steps_per_epoch"),
    )
    setup = task_module.setup(task_cfg, context)
    model = setup.model.to(torch_device)
    module = setup.averaged_module if setup.averaged_module is not None else model
    average_path = run_dir / AVERAGE_WEIGHTS
    average = _load_weights(module, average_path, torch_device) if average_path.is_file() else None
    _load_weights(model, online_path, torch_device)
    online = {key: value.detach().clone() for key, value in module.state_dict().items()}
    batches = analysis_batches(setup, config, num_batches, batch_size, seed, torch_device)
    mode = choose_mode(model, setup.train_loss, batches[0])
    return LoadedRun(
        run_dir=run_dir,
        result=result,
        config=config,
        task=str(config.task.name),
        method=str(result.get("method", config.get("method", {}).get("name", "unknown"))),
        seed=run_seed,
        model=model,
        module=module,
        loss_fn=setup.train_loss,
        evaluate=setup.evaluate,
        headline=setup.headline,
        batches=batches,
        online=online,
        average=average,
        mode=mode,
    )
