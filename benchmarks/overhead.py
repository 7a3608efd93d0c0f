"""`sema-overhead`: what one averaging update() costs, against the bandwidth bound and other EMA libraries.

    sema-overhead                                   # all models, CPU (and CUDA when available), 30 reps
    sema-overhead --models tiny_mlp resnet18 --reps 30 --device cpu --out results/overhead

On each model, in one process, interleaved (every repetition runs every method once, in a rotating order), it
times: the raw `torch._foreach_lerp_` over the same tensors (the bound: one read of the model, one read and one
write of a float32 average, 12 bytes per parameter), sema EMA and SEMA update(), timm ModelEmaV3,
ema_pytorch.EMA(use_foreach=True), torch AveragedModel(multi_avg_fn=get_ema_multi_avg_fn), and, for scale, one
SGD-momentum and one AdamW step. Each timing is the median over `--reps` repetitions of `inner` back-to-back calls
(inner chosen so that one repetition of the bound lasts about 2 ms; CUDA is synchronised around each
repetition). It also reports the memory the average holds (and its peak on CUDA) against one float32 copy.

Writes `<out>/overhead_<device>.md` and `.csv` with the command, git commit, torch version, machine and date.
Every `sema.METHODS` entry gets a row by itself (built from its Settings, `sema_factory`). Another library's
method: append `(name, factory)` to `METHODS`; `factory(model)` returns a zero-argument update callable (or raises
ImportError when its library is missing: the row is then reported as skipped).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import sema

DECAY = 0.999

# ----------------------------------------------------------------------------- models (random init, no download)


def tiny_mlp() -> nn.Module:
    """~85K parameters: the launch-overhead regime."""
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))


def resnet18() -> nn.Module:
    import torchvision

    return torchvision.models.resnet18(weights=None)


def resnet50() -> nn.Module:
    import torchvision

    return torchvision.models.resnet50(weights=None)


def vit_s() -> nn.Module:
    import timm

    return timm.create_model("vit_small_patch16_224", pretrained=False)


def gpt2() -> nn.Module:
    """The 124M GPT-2 configuration, randomly initialised (transformers' GPT2Config defaults)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config())


MODELS: dict[str, Callable[[], nn.Module]] = {
    "tiny_mlp": tiny_mlp,
    "resnet18": resnet18,
    "resnet50": resnet50,
    "vit_s": vit_s,
    "gpt2": gpt2,
}

# ----------------------------------------------------------------------------- methods: (name, factory(model) -> update)

BOUND = "bound: raw _foreach_lerp_"


def raw_bound(model: nn.Module) -> Callable[[], None]:
    """The bound: one `_foreach_lerp_` per (device, dtype) over prebuilt lists of the floating tensors (params and
    floating buffers, what sema averages by default) into float32 copies. For a bf16/fp16 model the model side is
    a float32 copy too (12 B/param; the true 10 B/param bound has no PyTorch kernel)."""
    model_side = [t.detach() for t in model.state_dict().values() if t.is_floating_point()]
    model_side = [t if t.dtype == torch.float32 else t.float() for t in model_side]
    average = [t.clone() for t in model_side]
    groups: dict[tuple, tuple[list, list]] = {}
    for a, m in zip(average, model_side):
        groups.setdefault((a.device, a.dtype), ([], []))
        groups[(a.device, a.dtype)][0].append(a)
        groups[(a.device, a.dtype)][1].append(m)
    lists = list(groups.values())

    def update() -> None:
        for a, m in lists:
            torch._foreach_lerp_(a, m, 1 - DECAY)

    update.average = average  # kept alive for memory accounting
    return update


# Every sema.METHODS entry is timed with its Settings defaults (decay DECAY where it has one), except where the
# default would not be the case worth timing: (label suffix, keyword overrides).
TIMING_OVERRIDES: dict[str, tuple[str, dict]] = {
    "lawa": ("(snapshot every call)", dict(unit="step", every=1)),  # the worst case; unit="epoch" only counts
    "lookahead": ("(k=5)", dict(k=5, alpha=0.5)),  # four counting calls, then one sync: timed amortised
}


def sema_factory(key: str) -> tuple[str, Callable[[nn.Module], Callable[[], None]]]:
    """(row label, factory) for `sema.METHODS[key]`, built from its Settings (see TIMING_OVERRIDES)."""
    import dataclasses

    cls = sema.METHODS[key]
    suffix, overrides = TIMING_OVERRIDES.get(key, ("", {}))
    has_decay = "decay" in {f.name for f in dataclasses.fields(cls.Settings)}
    settings = cls.Settings(**({"decay": DECAY} if has_decay else {}))
    kwargs = {**settings.kwargs(steps_per_epoch=1000), **overrides}

    def factory(model: nn.Module) -> Callable[[], None]:
        return cls(model, **kwargs).update

    return f"sema {cls.__name__}" + (f" {suffix}" if suffix else ""), factory


def timm_v3(model: nn.Module) -> Callable[[], None]:
    from timm.utils.model_ema import ModelEmaV3

    ema = ModelEmaV3(model, decay=DECAY)
    step = [0]

    def update() -> None:
        step[0] += 1
        ema.update(model, step=step[0])

    update.holder = ema
    return update


def ema_pytorch_foreach(model: nn.Module) -> Callable[[], None]:
    from ema_pytorch import EMA

    ema = EMA(model, beta=DECAY, update_after_step=0, update_every=1, use_foreach=True,
              include_online_model=False)
    ema.update()  # the first call initialises (copies); time the steady state
    return ema.update


def torch_averaged_model(model: nn.Module) -> Callable[[], None]:
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    avg = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(DECAY), use_buffers=True)
    avg.update_parameters(model)  # the first call copies; time the steady state

    def update() -> None:
        avg.update_parameters(model)

    update.holder = avg
    return update


def _with_grads(model: nn.Module) -> list[nn.Parameter]:
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.randn_like(p) * 1e-3
    return params


def sgd_step(model: nn.Module) -> Callable[[], None]:
    opt = torch.optim.SGD(_with_grads(model), lr=1e-3, momentum=0.9)
    return opt.step


def adamw_step(model: nn.Module) -> Callable[[], None]:
    opt = torch.optim.AdamW(_with_grads(model), lr=1e-6)
    return opt.step


METHODS: list[tuple[str, Callable[[nn.Module], Callable[[], None]]]] = [
    (BOUND, raw_bound),
    *(sema_factory(key) for key in sema.METHODS),
    ("timm ModelEmaV3", timm_v3),
    ("ema_pytorch EMA(use_foreach)", ema_pytorch_foreach),
    ("torch AveragedModel(multi_avg_fn)", torch_averaged_model),
    ("SGD momentum step", sgd_step),
    ("AdamW step", adamw_step),
]

# ----------------------------------------------------------------------------- timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_once(fn: Callable[[], None], inner: int, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / inner


def _fp32_copy_bytes(model: nn.Module) -> int:
    """One float32 copy of what sema averages by default (floating tensors in float32, integer ones as they are)."""
    total = 0
    for t in model.state_dict().values():
        total += t.numel() * (4 if t.is_floating_point() else t.element_size())
    return total


def _average_bytes(fn: Callable[[], None]) -> int | None:
    """Bytes held by a sema method's average (+ its scratch), read from the object itself (CPU and CUDA)."""
    owner = getattr(fn, "__self__", None)
    plan = getattr(owner, "_plan", None)
    if plan is None:
        return None
    return plan.average_bytes() + plan.scratch_bytes()


def bench_model(name: str, device: torch.device, dtype: torch.dtype, reps: int, warmup: int,
                target_ms: float) -> list[dict]:
    torch.manual_seed(0)
    model = MODELS[name]().to(device=device, dtype=dtype)
    n_params = sum(p.numel() for p in model.parameters())
    fp32_bytes = _fp32_copy_bytes(model)
    rows: list[dict] = []
    methods: list[tuple[str, Callable[[], None]]] = []
    for method, factory in METHODS:
        row = {"model": name, "params": n_params, "method": method, "note": ""}
        try:
            if device.type == "cuda":
                _sync(device)
                before = torch.cuda.memory_allocated(device)
                torch.cuda.reset_peak_memory_stats(device)
            fn = factory(model)
            fn()
            if device.type == "cuda":
                _sync(device)
                row["avg_bytes"] = torch.cuda.memory_allocated(device) - before
                row["avg_peak_bytes"] = torch.cuda.max_memory_allocated(device) - before
            else:
                held = _average_bytes(fn)
                row["avg_bytes"] = held if held is not None else ""
                row["avg_peak_bytes"] = ""
        except ImportError as err:
            row["note"] = f"skipped: {err}"
            rows.append(row)
            continue
        rows.append(row)
        methods.append((method, fn))
    bound_fn = dict(methods)[BOUND]
    one = min(_time_once(bound_fn, 1, device) for _ in range(3))
    inner = max(1, min(1000, math.ceil(target_ms * 1e-3 / max(one, 1e-9))))
    times: dict[str, list[float]] = {m: [] for m, _ in methods}
    for rep in range(warmup + reps):
        shift = rep % len(methods)
        for method, fn in methods[shift:] + methods[:shift]:  # rotate the order: no method always runs first
            t = _time_once(fn, inner, device)
            if rep >= warmup:
                times[method].append(t)
    bound = statistics.median(times[BOUND])
    per_param = 10 if dtype in (torch.bfloat16, torch.float16) else 12
    for row in rows:
        ts = times.get(row["method"])
        if not ts:
            continue
        med = statistics.median(ts)
        q = statistics.quantiles(ts, n=4) if len(ts) >= 2 else [med, med, med]
        row.update(
            median_ms=med * 1e3, p25_ms=q[0] * 1e3, p75_ms=q[2] * 1e3, ratio_to_bound=med / bound,
            gb_per_s=(per_param * n_params / med / 1e9) if "step" not in row["method"] else "",
            fp32_copy_bytes=fp32_bytes, reps=reps, inner=inner,
        )
    del methods, model
    return rows


# ----------------------------------------------------------------------------- provenance and output


def _provenance(argv: list[str], device: torch.device) -> dict[str, str]:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                cwd=Path(__file__).resolve().parent).stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, timeout=10,
                               cwd=Path(__file__).resolve().parent).stdout.strip()
        commit += " (dirty)" if dirty else ""
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    machine = f"{platform.node()} {platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs, " \
              f"torch threads {torch.get_num_threads()}"
    if device.type == "cuda":
        machine += f", {torch.cuda.get_device_name(device)}"
    return {
        "command": " ".join(["sema-overhead", *argv]),
        "commit": commit,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "machine": machine,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


COLUMNS = ["model", "params", "method", "median_ms", "p25_ms", "p75_ms", "ratio_to_bound", "gb_per_s",
           "avg_bytes", "avg_peak_bytes", "fp32_copy_bytes", "reps", "inner", "note"]


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_results(rows: list[dict], prov: dict[str, str], out: Path, device: torch.device, dtype: torch.dtype) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"overhead_{device.type}"
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        for k, v in prov.items():
            f.write(f"# {k}: {v}\n")
        f.write(f"# dtype: {dtype}\n")
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in COLUMNS})
    lines = [f"# sema update() overhead on {device.type} ({dtype})", ""]
    lines += [f"- {k}: `{v}`" for k, v in prov.items()]
    lines += ["", "Median ms per call (interleaved); ratio = median / the raw `_foreach_lerp_` bound on the same "
              "tensors; GB/s counts 12 B/param (10 for a bf16/fp16 model). Memory: bytes the average holds "
              "(CUDA: allocated after building it and its first update; peak during that), vs one float32 copy.", ""]
    lines.append("| model | params (M) | method | ms | ratio | GB/s | average bytes | peak bytes | fp32 copy | note |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        lines.append("| " + " | ".join([
            r["model"], f"{r['params'] / 1e6:.2f}", r["method"], _fmt(r.get("median_ms", "")),
            _fmt(r.get("ratio_to_bound", "")), _fmt(r.get("gb_per_s", "")), _fmt(r.get("avg_bytes", "")),
            _fmt(r.get("avg_peak_bytes", "")), _fmt(r.get("fp32_copy_bytes", "")), r.get("note", ""),
        ]) + " |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return stem.with_suffix(".md")


def print_table(rows: list[dict]) -> None:
    print(f"{'model':10s} {'method':36s} {'ms':>10s} {'ratio':>7s} {'avg MB':>9s}")
    for r in rows:
        held = r.get("avg_bytes")
        held = f"{held / 2**20:.2f}" if isinstance(held, int) else ""
        if "median_ms" in r:
            print(f"{r['model']:10s} {r['method']:36s} {r['median_ms']:10.4f} {r['ratio_to_bound']:7.3f} {held:>9s}")
        else:
            print(f"{r['model']:10s} {r['method']:36s} {r['note']}")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="sema-overhead", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS), help="models to time")
    parser.add_argument("--reps", type=int, default=30, help="timed repetitions per method (median reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed repetitions first")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "all"],
                        help="auto: CPU, plus CUDA when available; all: the same")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="the model's dtype")
    parser.add_argument("--target-ms", type=float, default=2.0, help="length of one repetition of the bound")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", default="results/overhead", help="output folder")
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error(f"--reps={args.reps} must be >= 1 (the issue asks for >= 30)")
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")]
    if args.device == "cpu":
        pass
    elif args.device == "cuda":
        if not torch.cuda.is_available():
            parser.error("--device cuda: no CUDA device is available")
        devices = [torch.device("cuda")]
    elif torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    dtype = getattr(torch, args.dtype)
    for device in devices:
        prov = _provenance(argv, device)
        rows: list[dict] = []
        for name in args.models:
            print(f"[{device.type}] {name} ...", flush=True)
            rows += bench_model(name, device, dtype, args.reps, args.warmup, args.target_ms)
        print_table(rows)
        path = write_results(rows, prov, Path(args.out), device, dtype)
        print(f"wrote {path} and {path.with_suffix('.csv')}")


if __name__ == "__main__":
    main()
