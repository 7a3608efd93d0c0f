"""Helpers for tests that drive the engine: a progress reporter that interrupts a run at a given step."""

from __future__ import annotations


class InterruptAtStep:
    """Progress that interrupts the run (like Ctrl-C, not recorded as failed) once `at` steps are done."""

    def __init__(self, at: int):
        self.at, self.done = at, 0

    def start(self, *args):
        pass

    def step(self, steps):
        self.done += steps
        if self.done == self.at:
            raise KeyboardInterrupt

    def epoch(self, record):
        pass

    def end(self, result):
        pass
