"""How much the engine's training step costs over a minimal hand-written PyTorch loop (target: at most 5%), and
where a step's time goes (data, forward + backward, optimizer, averager; FLOPs and achieved FLOP/s).

    python -m benchmarks.engine_overhead                         # classification quick scale, SEMA, 40 steps x 7
    python -m benchmarks.engine_overhead --method ema --steps 100 --reps 9 trainer.device=cuda

On CUDA both loops move batches to the device and use the same autocast (trainer.amp); timings are synchronised.
Both loops train the same model (same initial weights), on the same data path (a second loader built like the
engine's: a DataLoader, or with trainer.data_on_device batches made on the device), with the same
optimizer, learning-rate schedule and `sema` averager; the hand-written loop is the textbook
`loss = loss_fn(model, batch); zero_grad; backward; step; scheduler.step; averager.update`. Repetitions alternate
the two (engine, hand, engine, hand, ...) so that machine noise hits both alike; the medians are compared.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import tempfile
import time
from typing import Sequence

import torch

from benchmarks.runtime import to_device


def hand_written_epoch(model, loss_fn, loader, optimizer, scheduler, averager, steps: int,
                       device: torch.device = torch.device("cpu"), amp_dtype=None) -> None:
    model.train()
    for i, batch in enumerate(loader):
        if i == steps:
            break
        batch = to_device(batch, device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = loss_fn(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        averager.update()


def breakdown(method: str, steps: int, overrides: Sequence[str] = (), profile: str = "quick") -> dict[str, float]:
    """`step_breakdown` of a fresh engine Trainer for the classification recipe of `profile`."""
    from benchmarks import engine
    from benchmarks.recipes import compose_run

    with tempfile.TemporaryDirectory() as tmp:
        cfg, run_dir = compose_run(f"{profile}/classification", method, 0, tmp,
                                   ["logger.wandb.mode=disabled", *overrides])
        trainer = engine.Trainer(cfg, run_dir)
    return step_breakdown(trainer, min(steps, trainer.steps_per_epoch - 1))


def measure(method: str, steps: int, reps: int, overrides: Sequence[str] = (), profile: str = "quick") -> dict[str, float]:
    """Median per-step times of the engine's `train_epoch` and of the hand-written loop, and the overhead ratio."""
    from benchmarks import engine
    from benchmarks.methods import build_averager
    from benchmarks.optim import build_optimizer, lr_multiplier
    from benchmarks.recipes import compose_run

    with tempfile.TemporaryDirectory() as tmp:
        cfg, run_dir = compose_run(f"{profile}/classification", method, 0, tmp,
                                   ["logger.wandb.mode=disabled", f"trainer.max_steps_per_epoch={steps}",
                                    "trainer.epochs=1000", *overrides])
        trainer = engine.Trainer(cfg, run_dir)
    if trainer.averager is None:
        raise SystemExit("measure with an averaging method (e.g. --method sema)")
    task, device = trainer.task, trainer.device
    model = copy.deepcopy(trainer.model)
    optimizer = build_optimizer(cfg.optim, [{"params": list(model.parameters())}], lr=trainer.peak_lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_multiplier(cfg.optim, trainer.steps_per_epoch, trainer.total_steps))
    averager, _ = build_averager(cfg.method, model, trainer.steps_per_epoch)
    # the same data path as the engine's (a DataLoader, or batches on the device), with generators of its own
    loader = trainer.build_loader(cfg, torch.Generator(), torch.Generator(),
                                  torch.Generator(device) if trainer.augment_generator is not None else None)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    engine_s, hand_s = [], []
    for rep in range(reps + 1):  # the first repetition warms up both and is not counted
        sync()
        start = time.perf_counter()
        trainer.train_epoch()
        trainer.epoch += 1
        sync()
        mid = time.perf_counter()
        hand_written_epoch(model, task.train_loss, loader, optimizer, scheduler, averager, steps, device,
                           trainer.amp_dtype)
        sync()
        end = time.perf_counter()
        if rep:
            engine_s.append(mid - start)
            hand_s.append(end - mid)
    e, h = statistics.median(engine_s), statistics.median(hand_s)
    return {"engine_ms_per_step": 1e3 * e / steps, "hand_ms_per_step": 1e3 * h / steps, "overhead": e / h - 1,
            "engine_samples_per_s": steps * cfg.task.batch_size / e, "device": str(device),
            "precision": trainer.precision, "data": type(trainer.loader).__name__}


def step_breakdown(trainer, steps: int) -> dict[str, float]:
    """Where a training step's time goes, on the engine's own model, data and averager (synchronised on CUDA):
    data (next batch + move to the device), forward + backward, optimizer + schedule, averager update; plus the
    model's FLOPs per step (torch.utils.flop_counter) and the achieved FLOP/s of forward + backward."""
    from torch.utils.flop_counter import FlopCounterMode

    device, task = trainer.device, trainer.task

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    parts = {"data": 0.0, "forward_backward": 0.0, "optimizer": 0.0, "averager": 0.0}
    batches = iter(trainer.loader)
    flops = None
    for i in range(steps + 1):  # the first step warms up and is not counted
        sync()
        t0 = time.perf_counter()
        batch = to_device(next(batches), device)
        sync()
        t1 = time.perf_counter()
        counter = FlopCounterMode(display=False) if i == 1 else contextlib.nullcontext()
        trainer.optimizer.zero_grad(set_to_none=True)
        with counter:
            with trainer._autocast():
                loss = task.train_loss(trainer.train_model, batch)
            loss.backward()
        if i == 1:
            flops = counter.get_total_flops()
        sync()
        t2 = time.perf_counter()
        trainer.optimizer.step()
        trainer.scheduler.step()
        sync()
        t3 = time.perf_counter()
        trainer.averager.update()
        sync()
        t4 = time.perf_counter()
        if i:
            for key, took in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                parts[key] += took
    total = sum(parts.values())
    return {**{f"{k}_fraction": v / total for k, v in parts.items()}, "ms_per_step": 1e3 * total / steps,
            "samples_per_s": steps * trainer.cfg.task.batch_size / total, "flops_per_step": flops,
            "achieved_tflops": (flops or 0) * steps / max(parts["forward_backward"], 1e-12) / 1e12}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="sema", help="method config to average with (default: sema)")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per repetition (default: 40)")
    parser.add_argument("--reps", type=int, default=7, help="timed repetitions of each loop (default: 7)")
    parser.add_argument("--profile", default="quick", help="scale of the classification task (default: quick)")
    parser.add_argument("overrides", nargs="*", help="config overrides (key=value), e.g. trainer.num_threads=2")
    args = parser.parse_args(argv)
    r = measure(args.method, args.steps, args.reps, args.overrides, args.profile)
    b = breakdown(args.method, args.steps, args.overrides, args.profile)
    print(f"device, precision    : {r['device']}, {r['precision']}, data: {r['data']}")
    print(f"engine training step : {r['engine_ms_per_step']:8.3f} ms  ({r['engine_samples_per_s']:.0f} samples/s)")
    print(f"hand-written loop    : {r['hand_ms_per_step']:8.3f} ms")
    print(f"engine overhead      : {100 * r['overhead']:+7.2f} %   (target: <= +5 %; median of {args.reps} "
          f"interleaved repetitions of {args.steps} steps, {torch.get_num_threads()} threads)")
    print(f"step split           : data {100 * b['data_fraction']:.1f} %, forward+backward "
          f"{100 * b['forward_backward_fraction']:.1f} %, optimizer {100 * b['optimizer_fraction']:.1f} %, "
          f"averager {100 * b['averager_fraction']:.1f} %   (target on a GPU: data < 5 %)")
    print(f"forward+backward     : {b['flops_per_step'] / 1e9:.2f} GFLOP per step, "
          f"{b['achieved_tflops']:.3f} TFLOP/s achieved")


if __name__ == "__main__":
    main()
