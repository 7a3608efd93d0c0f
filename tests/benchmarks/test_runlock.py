"""One writer per run directory (benchmarks/runlock.py): a second writer stops naming the holder; a lock whose
holder is gone is taken over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from benchmarks.runlock import LOCK_FILE, RunLock, RunLocked


def write_lock(run_dir, age_s=0.0, **holder):
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "job": None, "since": "then", **holder}))
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))
    return path


@pytest.fixture(autouse=True)
def no_slurm(monkeypatch):
    for var in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(var, raising=False)


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RunLocked) as err:
            RunLock(tmp_path).acquire()
    message = str(err.value)
    assert f"host {socket.gethostname()} pid {os.getpid()}" in message and "choose another out_dir" in message
    assert not (tmp_path / LOCK_FILE).exists()  # released on exit
    with RunLock(tmp_path):  # and free again
        pass


def test_a_lock_left_by_a_dead_process_on_this_host_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_lock(tmp_path, host=socket.gethostname(), pid=dead.pid)
    with RunLock(tmp_path) as lock:
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid() == lock.me["pid"]


def test_a_live_holder_elsewhere_is_respected_until_its_heartbeat_stops(tmp_path):
    write_lock(tmp_path, age_s=30)
    with pytest.raises(RunLocked, match="host elsewhere pid 1"):
        RunLock(tmp_path, stale_s=600).acquire()
    write_lock(tmp_path, age_s=700)
    with RunLock(tmp_path, stale_s=600):
        pass


def test_a_requeued_slurm_job_takes_over_its_earlier_attempt(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    write_lock(tmp_path, job="4242")  # fresh heartbeat, another node: only the job id says it is ours
    with RunLock(tmp_path):
        pass
    with RunLock(tmp_path):  # but two live writers of one job on one node: the second is refused
        with pytest.raises(RunLocked, match="Slurm job 4242"):
            RunLock(tmp_path).acquire()
    write_lock(tmp_path, job="9999")
    with pytest.raises(RunLocked, match="Slurm job 9999"):
        RunLock(tmp_path).acquire()


def test_the_heartbeat_keeps_the_lock_fresh(tmp_path):
    with RunLock(tmp_path, heartbeat_s=0.05) as lock:
        stamp = time.time() - 100
        os.utime(lock.path, (stamp, stamp))
        time.sleep(0.3)
        assert time.time() - lock.path.stat().st_mtime < 5


def test_the_engine_refuses_a_second_writer_of_a_running_run(tmp_path):
    """A real run in a subprocess holds the lock; engine.run on the same directory stops and writes nothing."""
    from benchmarks import engine
    from benchmarks.recipes import compose_run

    overrides = ["logger.wandb.mode=disabled", "trainer.num_threads=1", "trainer.epochs=30",
                 "trainer.max_steps_per_epoch=null"]
    cfg, run_dir = compose_run("smoke/classification", "ema", 0, str(tmp_path), overrides)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.cli", "recipe=smoke/classification", "method=ema",
                             f"out_dir={tmp_path}", *overrides], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "result.json").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the first writer ended early"
            time.sleep(0.01)
        before = (run_dir / "result.json").read_bytes()
        with pytest.raises(RunLocked, match=f"pid {proc.pid}"):
            engine.run(cfg, run_dir)
        assert proc.poll() is None  # the holder goes on
        assert json.loads((run_dir / "result.json").read_bytes())["status"] == json.loads(before)["status"]
    finally:
        proc.kill()
        proc.wait()
