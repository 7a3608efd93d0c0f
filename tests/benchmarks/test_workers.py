"""benchmarks/workers.py: the pool that the suite's and the studies' --jobs share."""

import os
import signal
import subprocess
import sys
import time

import pytest

from benchmarks.results import CODE_VERSION_ENV
from benchmarks.workers import threads_per_worker, usable_cores, worker_pool


def test_threads_per_worker_splits_the_usable_cores():
    cores = usable_cores()
    assert threads_per_worker(1) == cores
    assert threads_per_worker(2) == max(1, cores // 2)
    assert threads_per_worker(cores * 4) == 1  # never 0 threads


def test_a_pool_of_no_workers_is_refused():
    with pytest.raises(ValueError, match="jobs=0: at least 1 worker"):
        worker_pool(0)


def test_workers_record_the_parents_code_version_and_watch_it(monkeypatch):
    monkeypatch.delenv(CODE_VERSION_ENV, raising=False)
    with worker_pool(1) as pool:
        version = pool.submit(os.getenv, CODE_VERSION_ENV).result()
        threads = pool.submit(eval, "sorted(t.name for t in __import__('threading').enumerate())").result()
        start_method = pool.submit(eval, "__import__('multiprocessing').get_start_method()").result()
    commit, dirty = version.split(":")
    assert version == os.environ[CODE_VERSION_ENV]  # what the parent set before it started the workers
    assert len(commit) in (0, 40) and dirty in ("", "0", "1")
    assert "parent-watch" in threads
    assert start_method == "spawn"


def test_a_worker_stops_when_its_parent_is_killed(tmp_path):
    """SIGKILL the job: its worker (busy for a minute) gets SIGTERM from its watcher and is gone within seconds."""
    pid_file = tmp_path / "worker.pid"
    job = (f"import os, time\nfrom benchmarks.workers import worker_pool\npool = worker_pool(1)\n"
           f"pid = pool.submit(os.getpid).result()\nopen({str(pid_file)!r}, 'w').write(str(pid))\n"
           f"pool.submit(time.sleep, 60)\ntime.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", job], cwd=os.getcwd())
    try:
        deadline = time.monotonic() + 60
        while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        worker = int(pid_file.read_text())
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.kill(worker, 0)
            except ProcessLookupError:
                break
            if _is_zombie(worker):
                break
            time.sleep(0.2)
        else:
            os.kill(worker, signal.SIGKILL)
            pytest.fail(f"worker {worker} still ran 20 s after its parent was killed")
    finally:
        if parent.poll() is None:
            parent.kill()


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False
