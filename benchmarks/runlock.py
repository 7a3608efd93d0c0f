"""One writer per run directory: `<run_dir>/.lock`, held for the whole run.

    with RunLock(run_dir):
        ...train, checkpoint, write result.json...

The lock file holds the holder's host, pid, Slurm job (if any) and start time; a thread refreshes its mtime every
`heartbeat_s` (the heartbeat). Taking it:

* no lock file: created atomically (O_CREAT | O_EXCL), so of two processes starting together one wins;
* a lock whose holder is gone is taken over: on this host a pid that no longer exists; anywhere a heartbeat older
  than `stale_s`; and the same Slurm job id on another node (a requeued job replaces its own previous attempt);
* otherwise `RunLocked` names the holder (host, pid, job, since when, last heartbeat) and how to proceed.

Under torchrun only rank 0 (the process that writes) holds it.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Optional

LOCK_FILE = ".lock"


class RunLocked(RuntimeError):
    """Another live process is writing this run directory."""


def _job_id() -> Optional[str]:
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    if job is None:
        return None
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{job}_{task}" if task is not None else job


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    """The run directory's lock (see the module docstring); a context manager."""

    def __init__(self, run_dir: Path | str, heartbeat_s: float = 60.0, stale_s: float = 600.0):
        self.path = Path(run_dir) / LOCK_FILE
        self.heartbeat_s, self.stale_s = heartbeat_s, stale_s
        self.me = {"host": socket.gethostname(), "pid": os.getpid(), "job": _job_id(),
                   "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # ---------------------------------------------------------------------------------------------- holding
    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # a takeover races with others at most a few times
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                why = self._stale(holder)
                if why is None:
                    raise RunLocked(self._message(holder)) from None
                if self._holder() == holder:  # still the holder we judged (not a fresh lock of a rival)
                    self.path.unlink(missing_ok=True)  # taken over: the holder is gone
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(self.me, f)
            self._thread = threading.Thread(target=self._beat, name="run-lock-heartbeat", daemon=True)
            self._thread.start()
            return
        raise RunLocked(f"could not take {self.path}: other processes keep taking it")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._holder() == self.me:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                os.utime(self.path)
            except FileNotFoundError:
                return

    # ----------------------------------------------------------------------------------------------- holder
    def _holder(self) -> Optional[dict]:
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def _age(self) -> float:
        try:
            return time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return float("inf")

    def _stale(self, holder: Optional[dict]) -> Optional[str]:
        """Why the lock can be taken over, or None when its holder may still be writing."""
        if holder is None:
            return "the lock file is empty or unreadable" if self._age() > self.heartbeat_s else None
        if holder.get("host") == self.me["host"] and not _pid_alive(int(holder.get("pid", -1))):
            return "its process is gone"
        if (holder.get("job") is not None and holder.get("job") == self.me["job"]
                and holder.get("host") != self.me["host"]):  # on this host a live pid means a second writer
            return "it is an earlier attempt of this Slurm job (requeued onto another node)"
        if self._age() > self.stale_s:
            return f"its heartbeat stopped {self._age():.0f} s ago"
        return None

    def _message(self, holder: Optional[dict]) -> str:
        holder = holder or {}
        job = f", Slurm job {holder['job']}" if holder.get("job") else ""
        return (f"{self.path.parent} is being written by host {holder.get('host')} pid {holder.get('pid')}{job} "
                f"(since {holder.get('since')}, last heartbeat {self._age():.0f} s ago). Wait for it to finish, "
                f"stop it, or choose another out_dir; a lock whose process is gone (or whose heartbeat stopped "
                f"over {self.stale_s:.0f} s ago) is taken over automatically")
