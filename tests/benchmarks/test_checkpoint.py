"""Checkpoints: atomic writes, weights_only loading, exact RNG round trips."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from benchmarks.checkpoint import load_checkpoint, preserved_rng, rng_state, save_checkpoint, set_rng_state


def draws(generator):
    return (torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)],
            torch.rand(3, generator=generator).tolist())


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    generator = torch.Generator().manual_seed(7)
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    save_checkpoint(tmp_path / "c.pt", {"rng": rng_state(generator), "epoch": 4})
    expected = draws(generator)
    other = torch.Generator().manual_seed(99)
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    state = load_checkpoint(tmp_path / "c.pt")
    set_rng_state(state["rng"], other)
    assert draws(other) == expected and state["epoch"] == 4


def test_a_failed_save_leaves_the_previous_checkpoint_intact(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"epoch": 1, "w": torch.ones(2)})
    with pytest.raises(Exception):
        save_checkpoint(path, {"epoch": 2, "bad": lambda: None})  # cannot be pickled
    assert load_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt", "c.pt.sha256"]  # no temporary file left


class Payload:
    """Any class: unpickling it would run import machinery chosen by the file's author."""


def test_loading_refuses_arbitrary_objects(tmp_path):
    torch.save({"x": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(Exception, match="[Ww]eights only"):
        load_checkpoint(tmp_path / "evil.pt")


def test_preserved_rng_puts_every_generator_back_also_on_exception():
    def draws():
        return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]

    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    expected = draws()
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    with preserved_rng():
        draws()
    with pytest.raises(RuntimeError):
        with preserved_rng():
            draws()
            raise RuntimeError("evaluation failed")
    assert draws() == expected
