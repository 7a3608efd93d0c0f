"""Side-by-side work units in worker processes, as the suite (`--jobs`) and the studies (`--jobs`) run them.

    with worker_pool(2) as pool:                      # two spawned workers, each watching this process
        futures = [pool.submit(fn, args) for args in work]
    threads_per_worker(2)                             # the torch threads each of them should use: cores // 2

What every pool of this project does the same way:
* **spawn**, not fork: a forked child of a process that already ran torch may deadlock in its thread pools;
* **the parent's code version**: the workers record the commit the job started with (results.CODE_VERSION_ENV),
  not one that a later `git commit` made while the job ran;
* **a watched parent**: if the job's process dies (killed, not interrupted), each worker sends itself SIGTERM,
  and its run checkpoints at its next step and stops like a preempted run; a rerun of the job resumes it.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the platform has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def threads_per_worker(jobs: int) -> int:
    """torch threads per worker when `jobs` workers share the usable cores (at least 1)."""
    return max(1, usable_cores() // max(1, jobs))


def watch_parent(parent: int) -> None:
    """In a worker (the pool's initializer): SIGTERM to this worker once `parent` is no longer its parent."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def worker_pool(jobs: int) -> ProcessPoolExecutor:
    """A pool of `jobs` spawned workers that record this process's code version and stop when it dies."""
    from benchmarks.results import CODE_VERSION_ENV, code_version

    if jobs < 1:
        raise ValueError(f"jobs={jobs}: at least 1 worker")
    commit, dirty = code_version()
    os.environ[CODE_VERSION_ENV] = f"{commit or ''}:{'' if dirty is None else int(dirty)}"
    return ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=watch_parent,
                               initargs=(os.getpid(),))
