"""`sema-analyze`: curvature, sharpness and loss landscapes of the final weights of finished runs.

    sema-analyze outputs/quick                      # every run under a sweep dir; skips runs already analysed
    sema-analyze outputs/run1 --force --probes 20   # one run, again, with more Hutchinson probes

For each run directory (see loading.py for the contract) and for each of its solutions, "online" (the trained
model) and "average" (the averaged weights; absent for the baseline), on a fixed, seeded list of training batches:
the mean loss, the largest and smallest Hessian eigenvalue (Lanczos; `--eigen-solver power`: the largest in
magnitude, as PyHessian reports it), the Hessian trace, epsilon-sharpness for a few rho, and 1-D/2-D
filter-normalised random-direction landscapes; plus the loss (and the task's headline metric) along the straight
line from the online to the averaged weights. Results go to `<run_dir>/analysis.json` (written atomically), plots
to `<run_dir>/analysis/*.png`.

Across runs of the same task, dataset, model, profile and seed it then interpolates between the final solutions of
pairs of methods (default baseline -> ema and ema -> sema; a method's solution is its averaged weights, or the online
weights when it has none) and adds the curves to both runs' analysis.json under "interpolation".

Every loss is evaluated with BatchNorm on its running statistics and dropout off (the whole model in eval mode, or
for losses that need train mode, train mode with those layers in eval mode; "mode" in analysis.json says which),
and torch's RNG reseeded per batch, so the measured loss is a deterministic function of the weights.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from benchmarks.results import read_result

ANALYSIS_FILE = "analysis.json"
EIGEN_SOLVERS = ("lanczos", "power")  # AnalysisSettings.eigen_solver
PLOT_DIR = "analysis"


@dataclass
class AnalysisSettings:
    """What to compute and how precisely (the defaults fit a quick-profile run in a few CPU minutes)."""

    num_batches: int = 4  # analysis batches (fixed, seeded); every measure averages the loss over them
    batch_size: Optional[int] = None  # batch size of the default analysis loader; None = the run's task.batch_size
    eigen_solver: str = "lanczos"  # "lanczos": largest and smallest eigenvalue (scipy eigsh); "power": largest |.|
    lanczos_products: int = 200  # about the most Hessian-vector products the Lanczos solve may use
    lanczos_tolerance: float = 1e-3  # relative accuracy of both ends (ARPACK's tol)
    power_iterations: int = 20  # eigen_solver="power": max Hessian-vector products for the top eigenvalue
    power_tolerance: float = 1e-3  # eigen_solver="power": stop when the estimate changes by less than this fraction
    probes: int = 10  # Rademacher probes for the Hutchinson trace
    rhos: tuple[float, ...] = (0.01, 0.05, 0.1)  # L2 radii for epsilon-sharpness (raw parameter space)
    sharpness_steps: int = 5  # projected gradient-ascent steps per rho
    grid: int = 11  # points per axis of the 1-D and 2-D random-direction landscapes
    extent: float = 1.0  # landscape coordinates span [-extent, extent] (units of the filter-normalised direction)
    landscape_2d: bool = True  # also the 2-D landscape (grid^2 loss evaluations per solution)
    interp_points: int = 13  # points on each interpolation line
    interp_range: tuple[float, float] = (-0.25, 1.25)  # alpha range; 0 = first solution, 1 = second
    metric: bool = True  # also evaluate the task's headline metric along interpolation lines (eval set)
    pairs: tuple[str, ...] = ("baseline:ema", "ema:sema")  # method pairs interpolated across runs (from:to)
    seed: int = 0  # seeds the batches, power-iteration start, probes, ascent start and landscape directions
    device: str = "cpu"  # cpu | cuda | auto
    cache_dir: Optional[str] = None  # the tasks' dataset cache; None = ~/.cache/sema-bench


def _linspace(low: float, high: float, points: int) -> list[float]:
    if points < 2:
        raise ValueError(f"need at least 2 points on a line, got {points}")
    return [low + (high - low) * i / (points - 1) for i in range(points)]


def _finite(value: Any) -> Any:
    """JSON-safe copy: non-finite floats (a diverged loss) become None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def write_json_atomic(path: Path, payload: dict) -> None:
    """Write to a temporary file in the same folder, then rename over the target (no half-written files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as out:
            json.dump(_finite(payload), out, indent=2)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def analyse_weights(run, state, settings: AnalysisSettings) -> dict:
    """All single-solution measures of `state` (a state dict of run.module)."""
    from benchmarks.analysis.hessian import (
        hessian_spectrum_ends,
        hutchinson_trace,
        mean_loss,
        top_hessian_eigenvalue,
        trainable_params,
    )
    from benchmarks.analysis.landscape import filter_normalized_direction, landscape_1d, landscape_2d
    from benchmarks.analysis.sharpness import epsilon_sharpness

    run.load(state)
    params = trainable_params(run.module)
    model, loss_fn, batches, seed = run.model, run.loss_fn, run.batches, settings.seed
    timing: dict[str, float] = {}
    out: dict[str, Any] = {"num_params": sum(p.numel() for p in params)}

    start = time.perf_counter()
    out["loss"] = mean_loss(model, loss_fn, batches, seed=seed)
    timing["loss"] = time.perf_counter() - start

    start = time.perf_counter()
    out["hessian_eig_solver"] = settings.eigen_solver
    if settings.eigen_solver == "lanczos":  # hessian_top_eig: the largest eigenvalue; hessian_min_eig: the smallest
        ends = hessian_spectrum_ends(model, loss_fn, batches, params, settings.lanczos_products,
                                     settings.lanczos_tolerance, seed=seed)
        out["hessian_top_eig"], out["hessian_min_eig"] = ends.top, ends.bottom
        out["hessian_top_eig_iterations"], out["hessian_top_eig_converged"] = ends.products, ends.converged
    elif settings.eigen_solver == "power":  # the eigenvalue of largest magnitude (negative where that end is larger)
        eigen = top_hessian_eigenvalue(
            model, loss_fn, batches, params, settings.power_iterations, settings.power_tolerance, seed=seed
        )
        out["hessian_top_eig"] = eigen.eigenvalue
        out["hessian_top_eig_iterations"] = eigen.iterations
        out["hessian_top_eig_converged"] = eigen.converged
    else:
        raise ValueError(f"eigen_solver={settings.eigen_solver!r} is not allowed; choose one of: "
                         + ", ".join(EIGEN_SOLVERS))
    timing["hessian_top_eig"] = time.perf_counter() - start

    start = time.perf_counter()
    trace = hutchinson_trace(model, loss_fn, batches, params, settings.probes, seed=seed)
    out["hessian_trace"] = trace.trace
    out["hessian_trace_stderr"] = trace.standard_error
    timing["hessian_trace"] = time.perf_counter() - start

    start = time.perf_counter()
    out["sharpness"] = {}
    for rho in settings.rhos:
        found = epsilon_sharpness(model, loss_fn, batches, rho, params, settings.sharpness_steps, seed=seed)
        out["sharpness"][str(rho)] = found.increase
    timing["sharpness"] = time.perf_counter() - start

    start = time.perf_counter()
    coords = _linspace(-settings.extent, settings.extent, settings.grid)
    direction_x = filter_normalized_direction(params, seed=seed)
    out["landscape_1d"] = landscape_1d(model, loss_fn, batches, direction_x, coords, params, seed=seed)
    timing["landscape_1d"] = time.perf_counter() - start
    if settings.landscape_2d:
        start = time.perf_counter()
        direction_y = filter_normalized_direction(params, seed=seed + 1)
        out["landscape_2d"] = landscape_2d(model, loss_fn, batches, direction_x, direction_y, coords, params, seed)
        timing["landscape_2d"] = time.perf_counter() - start
    out["timing_s"] = timing
    return out


def _interpolate(run, start_state, end_state, settings: AnalysisSettings) -> dict:
    from benchmarks.analysis.landscape import interpolation_curve

    alphas = _linspace(*settings.interp_range, settings.interp_points)
    began = time.perf_counter()
    curve = interpolation_curve(
        run.model, run.module, run.loss_fn, run.batches, start_state, end_state, alphas,
        metric_fn=run.metric if settings.metric else None, seed=settings.seed,
    )
    curve["metric_name"] = run.headline if settings.metric else None
    curve["time_s"] = time.perf_counter() - began
    return curve


def _plot_interpolation(run_dir: Path, name: str, curve: dict, labels: tuple[str, str]) -> list[str]:
    from benchmarks.analysis.landscape import plot_curves

    title = f"{labels[0]} (alpha=0) -> {labels[1]} (alpha=1)"
    paths = [plot_curves(run_dir / PLOT_DIR / f"interpolation_{name}_loss.png",
                         {"loss": (curve["alpha"], curve["loss"])}, "alpha", "train loss", title)]
    if curve.get("metric"):
        paths.append(plot_curves(run_dir / PLOT_DIR / f"interpolation_{name}_metric.png",
                                 {curve["metric_name"]: (curve["alpha"], curve["metric"])}, "alpha",
                                 curve["metric_name"], title))
    return [str(path.relative_to(run_dir)) for path in paths]


def _plot_landscapes(run_dir: Path, solutions: dict, title: str) -> list[str]:
    from benchmarks.analysis.landscape import plot_curves, plot_surface

    paths = [plot_curves(
        run_dir / PLOT_DIR / "landscape_1d.png",
        {name: (out["landscape_1d"]["coord"], out["landscape_1d"]["loss"]) for name, out in solutions.items()},
        "step along a filter-normalised random direction", "train loss", title,
    )]
    for name, out in solutions.items():
        if "landscape_2d" in out:
            surface = out["landscape_2d"]
            paths.append(plot_surface(run_dir / PLOT_DIR / f"landscape_2d_{name}.png", surface["coord"],
                                      surface["loss"], f"{title}: {name}"))
    return [str(path.relative_to(run_dir)) for path in paths]


def analyse_run(run_dir: Path, settings: AnalysisSettings, run=None) -> dict:
    """Analyse one run directory and write its analysis.json; returns the payload."""
    from benchmarks.analysis.loading import load_run

    began = time.perf_counter()
    if run is None:
        run = load_run(run_dir, settings.num_batches, settings.batch_size, settings.seed, settings.device,
                       settings.cache_dir)
    load_time = time.perf_counter() - began
    solutions = {"online": analyse_weights(run, run.online, settings)}
    # SEMA runs that end on a switch hold the same weights twice: measure them once.
    same = run.average is not None and all(torch.equal(run.online[k], run.average[k]) for k in run.online)
    if run.average is not None:
        solutions["average"] = dict(solutions["online"]) if same else analyse_weights(run, run.average, settings)
    payload: dict[str, Any] = {
        "run_dir": str(run_dir),
        "task": run.task,
        "method": run.method,
        "seed": run.seed,
        "online": solutions["online"],
        "average": solutions.get("average"),
        "interpolation": {},
        "notes": [],
        "plots": _plot_landscapes(run_dir, solutions, f"{run.task}/{run.method}/seed{run.seed}"),
    }
    if same:
        payload["notes"] = ["the averaged weights equal the online weights (the run ended on a switch): "
                            "measured once, no online-average line"]
    elif run.average is not None:
        curve = _interpolate(run, run.online, run.average, settings)
        curve.update({"from": "online", "to": "average"})
        payload["interpolation"]["online-average"] = curve
        payload["plots"] += _plot_interpolation(run_dir, "online-average", curve, ("online", "average"))
    run.load(run.online)
    payload.update({
        "mode": run.mode,
        "batchnorm": "eval (running statistics)",
        "landscape_directions": "filter-normalised Gaussian (Li et al. 2018); biases and norm parameters fixed "
                                "(zero direction); buffers not perturbed",
        "settings": asdict(settings),
        "analysis_seed": settings.seed,
        "num_batches": len(run.batches),
        "torch_threads": torch.get_num_threads(),
        "timing_s": {"load": load_time, "total": time.perf_counter() - began},
    })
    write_json_atomic(run_dir / ANALYSIS_FILE, payload)
    return payload


def _group_key(result: dict) -> tuple:
    return tuple(str(result.get(key)) for key in ("task", "dataset", "model", "profile", "seed"))


def analyse_pairs(run_dirs: list[Path], settings: AnalysisSettings, force: bool, log=print) -> int:
    """Interpolate between methods' solutions within each (task, dataset, model, profile, seed) group."""
    from benchmarks.analysis.loading import load_run

    groups: dict[tuple, dict[str, list[Path]]] = {}
    for run_dir in run_dirs:
        if not (run_dir / ANALYSIS_FILE).is_file():
            continue  # only runs that could be analysed themselves
        result = read_result(run_dir)  # None when unreadable (empty, torn, not UTF-8)
        if result is None:
            continue
        groups.setdefault(_group_key(result), {}).setdefault(str(result.get("method")), []).append(run_dir)
    loaded: dict[Path, Any] = {}

    def load(run_dir: Path):
        if run_dir not in loaded:
            if len(loaded) >= 2:  # keep at most two rebuilt runs in memory
                loaded.pop(next(iter(loaded)))
            loaded[run_dir] = load_run(run_dir, settings.num_batches, settings.batch_size, settings.seed,
                                       settings.device, settings.cache_dir)
        return loaded[run_dir]

    done = 0
    for spec in settings.pairs:
        first, second = spec.split(":")
        for by_method in groups.values():
            several = len(by_method.get(first, [])) * len(by_method.get(second, [])) > 1
            for dir_a in by_method.get(first, []):
                for dir_b in by_method.get(second, []):
                    name = f"{first}-{second}" + (f"@{dir_a.name}-{dir_b.name}" if several else "")
                    payload_a = json.loads((dir_a / ANALYSIS_FILE).read_text())
                    payload_b = json.loads((dir_b / ANALYSIS_FILE).read_text())
                    if not force and name in payload_a["interpolation"] and name in payload_b["interpolation"]:
                        continue
                    began = time.perf_counter()
                    run_a, run_b = load(dir_a), load(dir_b)
                    state_a = run_a.average if run_a.average is not None else run_a.online
                    state_b = run_b.average if run_b.average is not None else run_b.online
                    try:
                        curve = _interpolate(run_a, state_a, state_b, settings)
                    except ValueError as error:  # e.g. two runs of the group with different architectures
                        log(f"  pair {name}: skipped, {error}")
                        continue
                    curve.update({
                        "from": str(dir_a), "to": str(dir_b),
                        "from_weights": "average" if run_a.average is not None else "online",
                        "to_weights": "average" if run_b.average is not None else "online",
                    })
                    for run_dir, payload in ((dir_a, payload_a), (dir_b, payload_b)):
                        payload["interpolation"][name] = curve
                        plots = _plot_interpolation(run_dir, name, curve, (first, second))
                        payload["plots"] = sorted(set(payload["plots"]) | set(plots))
                        write_json_atomic(run_dir / ANALYSIS_FILE, payload)
                    done += 1
                    log(f"  pair {name}: {dir_a} -> {dir_b} in {time.perf_counter() - began:.1f} s")
    return done


def build_parser() -> argparse.ArgumentParser:
    defaults = AnalysisSettings()
    parser = argparse.ArgumentParser(
        prog="sema-analyze",
        description="Hessian top eigenvalue and trace, epsilon-sharpness, interpolation lines and random-direction "
        "loss landscapes of the final weights of sema-bench runs; writes <run_dir>/analysis.json and PNG plots.",
    )
    parser.add_argument("paths", nargs="+", type=Path, help="run directories or sweep directories holding them")
    parser.add_argument("--num-batches", type=int, default=defaults.num_batches, help="fixed analysis batches")
    parser.add_argument("--batch-size", type=int, default=None, help="analysis batch size (default: the run's)")
    parser.add_argument("--eigen-solver", choices=EIGEN_SOLVERS, default=defaults.eigen_solver,
                        help="lanczos: the largest and smallest Hessian eigenvalue; power: the largest in magnitude")
    parser.add_argument("--lanczos-products", type=int, default=defaults.lanczos_products)
    parser.add_argument("--lanczos-tolerance", type=float, default=defaults.lanczos_tolerance)
    parser.add_argument("--power-iterations", type=int, default=defaults.power_iterations)
    parser.add_argument("--power-tolerance", type=float, default=defaults.power_tolerance)
    parser.add_argument("--probes", type=int, default=defaults.probes, help="Hutchinson probes")
    parser.add_argument("--rho", type=float, nargs="+", default=list(defaults.rhos), help="sharpness radii")
    parser.add_argument("--sharpness-steps", type=int, default=defaults.sharpness_steps)
    parser.add_argument("--grid", type=int, default=defaults.grid, help="landscape points per axis")
    parser.add_argument("--extent", type=float, default=defaults.extent, help="landscape half-width")
    parser.add_argument("--no-2d", action="store_true", help="skip the 2-D landscape")
    parser.add_argument("--interp-points", type=int, default=defaults.interp_points)
    parser.add_argument("--interp-range", type=float, nargs=2, default=list(defaults.interp_range))
    parser.add_argument("--no-metric", action="store_true", help="loss only along interpolation lines")
    parser.add_argument("--pairs", nargs="*", default=list(defaults.pairs), help="FROM:TO method pairs")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--device", default=defaults.device, choices=("cpu", "cuda", "auto"))
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--cache-dir", default=None, help="dataset cache of the tasks")
    parser.add_argument("--force", action="store_true", help="analyse again runs that have an analysis.json")
    return parser


def settings_from_args(args: argparse.Namespace) -> AnalysisSettings:
    settings = AnalysisSettings(
        num_batches=args.num_batches, batch_size=args.batch_size, eigen_solver=args.eigen_solver,
        lanczos_products=args.lanczos_products, lanczos_tolerance=args.lanczos_tolerance,
        power_iterations=args.power_iterations,
        power_tolerance=args.power_tolerance, probes=args.probes, rhos=tuple(args.rho),
        sharpness_steps=args.sharpness_steps, grid=args.grid, extent=args.extent, landscape_2d=not args.no_2d,
        interp_points=args.interp_points, interp_range=tuple(args.interp_range), metric=not args.no_metric,
        pairs=tuple(args.pairs), seed=args.seed, device=args.device, cache_dir=args.cache_dir,
    )
    for name in ("num_batches", "lanczos_products", "power_iterations", "probes", "sharpness_steps"):
        if getattr(settings, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(settings, name)}")
    if settings.grid < 2 or settings.interp_points < 2:
        raise ValueError("--grid and --interp-points must be >= 2")
    for spec in settings.pairs:
        if spec.count(":") != 1 or not all(spec.split(":")):
            raise ValueError(f"--pairs entry {spec!r} is not allowed; write FROM_METHOD:TO_METHOD, e.g. ema:sema")
    if any(rho <= 0 for rho in settings.rhos):
        raise ValueError(f"--rho values must be > 0, got {list(settings.rhos)}")
    return settings


def main(argv: Optional[list[str]] = None) -> int:
    from benchmarks.analysis.loading import find_run_dirs

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
        run_dirs = sorted({run for path in args.paths for run in find_run_dirs(path)})
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))  # exits with status 2 and the usage line
    torch.set_num_threads(args.threads)
    failures = 0
    for run_dir in run_dirs:
        if (run_dir / ANALYSIS_FILE).is_file() and not args.force:
            print(f"skip {run_dir} (analysis.json exists; --force to redo)")
            continue
        result = read_result(run_dir)  # None when unreadable (empty, torn, not UTF-8)
        if result is None:
            failures += 1
            print(f"UNREADABLE {run_dir / 'result.json'}: not a JSON object (sema-report lists it too); skipped")
            continue
        if result.get("status") != "completed":
            print(f"skip {run_dir} (status {result.get('status')!r}, not completed)")
            continue
        began = time.perf_counter()
        try:
            payload = analyse_run(run_dir, settings)
        except Exception as error:  # noqa: BLE001 - one broken run must not stop a sweep's analysis
            failures += 1
            print(f"FAILED {run_dir}: {type(error).__name__}: {error}")
            continue
        summary = ", ".join(
            f"{name}: eig {payload[name]['hessian_top_eig']:.3g} tr {payload[name]['hessian_trace']:.3g}"
            for name in ("online", "average") if payload[name] is not None
        )
        print(f"done {run_dir} in {time.perf_counter() - began:.1f} s ({summary})")
    analyse_pairs(run_dirs, settings, force=args.force)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
