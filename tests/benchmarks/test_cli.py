"""`sema-bench` end to end, as users run it: real subprocesses, real Hydra, real files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
FAST = ["logger.wandb.mode=disabled", "trainer.num_threads=1", "recipe=smoke/classification"]


def sema_bench(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.cli", *args], capture_output=True, text=True, env=ENV,
                          timeout=300, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"sema-bench {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def result_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "result.json").read_text())


def test_single_run_writes_result_and_a_rerun_skips_it(tmp_path):
    sema_bench(*FAST, f"out_dir={tmp_path}", "method=sema")
    run_dir = tmp_path / "smoke" / "classification" / "sema" / "seed0"
    result = result_of(run_dir)
    assert result["status"] == "completed" and len(result["history"]) == 2
    assert (run_dir / ".hydra" / "config.yaml").exists() and (run_dir / "weights" / "average.safetensors").exists()
    before = (run_dir / "result.json").read_bytes()
    rerun = sema_bench(*FAST, f"out_dir={tmp_path}", "method=sema")
    assert "already completed" in rerun.stdout + rerun.stderr
    assert (run_dir / "result.json").read_bytes() == before


def test_sweep_records_a_diverged_run_as_failed_goes_on_then_exits_non_zero_naming_it(tmp_path):
    proc = sema_bench("-m", *FAST, f"out_dir={tmp_path}", "method=baseline,ema,sema", "optim.lr=0.05,1e30",
                      check=False)
    assert proc.returncode == 1 and "3 run(s) of the sweep failed" in proc.stderr
    assert str(tmp_path / "smoke" / "classification" / "sema" / "seed0" / "optim.lr=1e+30") in proc.stderr
    root = tmp_path / "smoke" / "classification"
    for method in ("baseline", "ema", "sema"):
        ok, diverged = result_of(root / method / "seed0" / "optim.lr=0.05"), result_of(
            root / method / "seed0" / "optim.lr=1e+30")
        assert ok["status"] == "completed" and ok["method"] == method
        assert diverged["status"] == "failed" and "NonFiniteLoss" in diverged["error"]


def test_a_second_sweep_into_one_out_dir_keeps_the_first_sweeps_multirun_yaml(tmp_path):
    sema_bench("-m", *FAST, f"out_dir={tmp_path}", "method=baseline")
    first = (tmp_path / "multirun.yaml").read_text()
    second = sema_bench("-m", *FAST, f"out_dir={tmp_path}", "method=baseline", "logger.progress=false")
    assert "already completed" in second.stdout + second.stderr  # logger.* does not change the run
    kept = list(tmp_path.glob("multirun.*.yaml"))
    assert len(kept) == 1 and kept[0].read_text() == first
    assert "logger.progress=false" in (tmp_path / "multirun.yaml").read_text()
    assert "logger.progress=false" not in first


def test_a_bad_name_exits_with_the_allowed_choices(tmp_path):
    # (every other kind of bad name is checked in process, in test_config.py)
    proc = sema_bench(*FAST, f"out_dir={tmp_path}", "method=sgdr", check=False)
    assert proc.returncode != 0
    assert "Could not find 'method/sgdr'" in proc.stderr and "Available options in 'method'" in proc.stderr
    assert "sema" in proc.stderr.split("Available options in 'method'")[1]


def test_help_shows_what_a_user_can_choose_and_what_a_bare_command_does():
    from benchmarks.methods import choices
    from benchmarks.recipes import CONFIG_DIR, RECIPES

    out = sema_bench("--help").stdout
    assert "the main job" in out and "--plan" in out and "--list" in out
    assert all(name in out for name in RECIPES) and all(name in out for name in choices(CONFIG_DIR / "method"))
    assert "schema" not in out and "_schema" not in out  # internal nodes are not choices
    hydra_help = sema_bench("--hydra-help").stdout
    assert "Hydra" in hydra_help and "--multirun" in hydra_help


def test_list_describes_every_recipe_method_and_task():
    from benchmarks.recipes import RECIPES
    from benchmarks.tasks import TASKS

    out = sema_bench("--list").stdout
    lines = out.splitlines()
    for name, recipe in RECIPES.items():
        assert any(line.split()[:2] == [name, recipe.task] for line in lines), name
    for name in (*TASKS, "baseline", "ema", "sema", "swa", "sema_paper"):
        assert any(line.split()[:1] == [name] and len(line.split()) > 2 for line in lines), name


def test_plan_prints_the_resolved_config_and_the_schedule_without_running(tmp_path):
    out = sema_bench("--plan", "recipe=smoke/classification", "method=sema", f"out_dir={tmp_path}").stdout
    assert "${" not in out  # resolved
    assert "steps per epoch: 8 (1438 training examples / batch 32, capped at 8; one process: under torchrun each " \
        "rank sees 1/N)" in out
    assert "total steps: 16 (2 epochs)" in out
    assert "decay warm-up ends after step 4 (epoch 0.5)" in out  # averaging.warmup_epochs 0.5 of 8 steps
    assert "writes into the trained model after epochs: 2" in out  # switch_start 1: the first switch ends epoch 2
    assert not any(tmp_path.iterdir())  # nothing ran, nothing was written


def test_former_options_say_what_replaces_them(tmp_path):
    proc = sema_bench("task=classification", "profile=quick", f"out_dir={tmp_path}", check=False)
    assert proc.returncode != 0 and "recipe=<profile>/<task>" in proc.stderr
    proc = sema_bench("recipe=quick/clasification", f"out_dir={tmp_path}", check=False)
    assert proc.returncode != 0 and "did you mean" not in proc.stderr and "quick/classification" in proc.stderr


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    # Full digits epochs (44 steps) so that an epoch takes long enough to be interrupted in the middle.
    args = [*FAST, "method=sema", "trainer.epochs=3", "trainer.max_steps_per_epoch=null"]
    sema_bench(*args, f"out_dir={tmp_path / 'straight'}")
    interrupted = tmp_path / "killed"
    run_dir = interrupted / "smoke" / "classification" / "sema" / "seed0" / "trainer.epochs=3,trainer.max_steps_per_epoch=null"
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.cli", *args, f"out_dir={interrupted}"], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not (run_dir / "checkpoint.pt").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert result_of(run_dir)["status"] == "running"  # killed mid-run, not finished
    resumed = sema_bench(*args, f"out_dir={interrupted}")
    assert "resuming after epoch" in resumed.stdout + resumed.stderr

    straight_dir = tmp_path / "straight" / run_dir.relative_to(interrupted)
    a, b = result_of(straight_dir), result_of(run_dir)
    assert b["status"] == "completed"
    keys = ("epoch", "step", "train_loss", "lr", "switched", "avg", "online")
    assert [{k: h[k] for k in keys} for h in a["history"]] == [{k: h[k] for k in keys} for h in b["history"]]
    assert a["final"] == b["final"] and a["best"] == b["best"]
    for name in ("online.safetensors", "average.safetensors"):
        wa, wb = load_file(straight_dir / "weights" / name), load_file(run_dir / "weights" / name)
        assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)
    logged = (run_dir / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in logged] == [1, 2, 3]  # no epoch logged twice


@pytest.mark.slow
def test_main_job_runs_the_suite_and_prints_the_table(tmp_path):
    # (classification only: each task's own tests run it at smoke scale)
    # Two processes side by side: the baseline's trajectory carries EMA, SEMA trains on its own.
    proc = subprocess.run([sys.executable, "-m", "benchmarks.suite", "--profile", "smoke", "--out-dir",
                           str(tmp_path), "--tasks", "classification", "--jobs", "2", "--",
                           "logger.wandb.mode=disabled", "trainer.num_threads=1"],
                          capture_output=True, text=True, env={**ENV, "COLUMNS": "200"}, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = tmp_path / "smoke" / "classification"
    for method in ("baseline", "ema", "sema"):
        assert result_of(runs / method / "seed0")["status"] == "completed"  # logger.* is not part of the path
    assert result_of(runs / "ema" / "seed0")["trajectory"]["trained_by"] == "baseline"
    assert "trajectory" not in result_of(runs / "sema" / "seed0")
    out = proc.stdout.replace("\n", " ")
    assert "suite finished" in out and str(tmp_path / "smoke") in proc.stdout.replace("\n", "")
    assert "shared trajectories: 1 run(s) rode on another run's training" in out and "time per task" in out
    assert "Leaderboard across 1 table(s), against baseline" in out
    report = tmp_path / "smoke" / "report"
    assert {"leaderboard.md", "leaderboard.csv"} <= {p.name for p in report.iterdir()}


def test_slurm_needs_a_partition_and_out_dir_becomes_absolute(tmp_path):
    proc = sema_bench("-m", "hydra/launcher=slurm", "recipe=smoke/classification", check=False)
    assert proc.returncode != 0 and "hydra/launcher=slurm needs hydra.launcher.partition=" in proc.stderr
    from benchmarks.cli import _absolute_out_dir

    assert _absolute_out_dir(["method=sema"]) == ["method=sema", f"out_dir={Path('runs').absolute()}"]
    assert _absolute_out_dir(["out_dir=x/y"]) == [f"out_dir={Path('x/y').absolute()}"]
    assert _absolute_out_dir(["out_dir=a,/b"]) == [f"out_dir={Path('a').absolute()},/b"]  # a sweep's list


def test_a_long_override_list_gets_a_short_hashed_run_directory(tmp_path):
    from benchmarks.recipes import MAX_VARIANT_CHARS, compose_run

    many = [f"task.eval_batch_size={n}" for n in (64,)] + [f"optim.lr={0.1 + i / 1000}" for i in range(1)] + [
        "task.hue=0.1", "task.blur_p=[1.0,0.1]", "task.solarize_p=[0.0,0.2]", "task.saturation=0.3",
        "optim.weight_decay=0.001", "trainer.max_steps_per_epoch=3", "task.hidden_dim=64", "task.out_dim=32"]
    _, run_dir = compose_run("quick/ssl", "sema", 0, str(tmp_path), many)
    _, again = compose_run("quick/ssl", "sema", 0, str(tmp_path), list(reversed(many)))
    _, other = compose_run("quick/ssl", "sema", 0, str(tmp_path), [*many[:-1], "task.out_dim=16"])
    assert run_dir == again  # the order of the overrides does not matter (Hydra sorts them)
    name = run_dir.name
    assert len(name) <= MAX_VARIANT_CHARS + 13 and name.startswith("optim.lr=0.1,optim.weight_decay=0.001,")
    assert name.rsplit("~", 1)[1] != other.name.rsplit("~", 1)[1]  # a different override, a different hash
    _, short = compose_run("quick/ssl", "sema", 0, str(tmp_path), ["trainer.epochs=3"])
    assert short.name == "trainer.epochs=3"


def test_the_suite_shares_the_passive_methods_and_starts_every_shared_unit_first():
    from benchmarks.suite import Unit, plan_units

    chosen = [("detection", ("baseline", "ema", "sema"), (0,)),
              ("lm", ("baseline", "swa", "lookahead", "sema"), (0,))]
    assert plan_units(chosen, share=True) == [
        Unit("detection", ("baseline", "ema"), 0), Unit("lm", ("baseline", "swa"), 0),
        Unit("detection", ("sema",), 0), Unit("lm", ("lookahead",), 0), Unit("lm", ("sema",), 0)]
    assert plan_units([(*chosen[0][:2], (0, 1))], share=False) == [Unit("detection", (m,), s) for s in (0, 1)
                                                                   for m in ("baseline", "ema", "sema")]


def test_the_cpu_suite_runs_every_method_the_presets_where_they_differ_and_3_or_5_seeds():
    from benchmarks.suite import CPU_METHODS, SUITE, suite_plan

    plan = {task: (methods, seeds) for task, methods, seeds in suite_plan("cpu")}
    assert list(plan) == [task for task, _ in SUITE]
    assert plan["detection"] == ((*CPU_METHODS, "sema_mmdet"), (0, 1, 2))
    assert plan["classification"] == ((*CPU_METHODS, "sema_openmixup"), (0, 1, 2, 3, 4))
    assert plan["lm"] == (CPU_METHODS, (0, 1, 2, 3, 4)) and plan["video"] == (CPU_METHODS, (0, 1, 2))
    assert "sema_blend" in CPU_METHODS and "lookahead" in CPU_METHODS
    assert suite_plan("main", ["lm"]) == [("lm", ("baseline", "ema", "sema"), (0,))]
    assert suite_plan("cpu", ["video"], seeds=[7])[0][2] == (7,)
    with pytest.raises(ValueError, match="suite 'gpu' is not a suite; choose one of: main, cpu"):
        suite_plan("gpu")


def test_the_suite_estimate_counts_finished_units_as_done_and_times_the_rest_from_them(tmp_path):
    from benchmarks.suite import Unit, estimate_text

    def finished(task, method, seed, seconds, status="completed"):
        run = tmp_path / "quick" / task / method / f"seed{seed}"
        run.mkdir(parents=True)
        (run / "result.json").write_text(json.dumps({"status": status, "wall_time_s": seconds}))

    finished("lm", "baseline", 0, 120.0)
    finished("lm", "ema", 0, 120.0)
    finished("lm", "sema", 0, 60.0)
    finished("lm", "sema", 1, 30.0, status="running")
    units = [Unit("lm", ("baseline", "ema"), 0), Unit("lm", ("sema",), 0), Unit("lm", ("baseline", "ema"), 1),
             Unit("lm", ("sema",), 1)]
    # done: the two seed-0 units; the other two at the task's slowest finished unit (120 s), not sema's 30 s so
    # far: (120 + 120) / 2 processes = 2 min
    assert estimate_text(units, 2, str(tmp_path), "quick") == (
        "4 work units (6 runs) on 2 process(es), 2 of them done already; about 2 min for the other 2 if each takes "
        "as long as its task's finished units did (shared units with more riders take longer: more evaluations)")
