"""The engine's speed options, exercised on the CPU: torch.compile, channels_last and checkpoints written in the
background give the same run as without them (to float rounding), and a background write never loses or mixes
up a checkpoint."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from benchmarks import checkpoint as ckpt
from benchmarks import engine
from benchmarks.recipes import compose_run

FAST = ["logger.wandb.mode=disabled", "trainer.num_threads=1"]


def _run(tmp_path, recipe, name, extra):
    cfg, run_dir = compose_run(recipe, "sema", 0, str(tmp_path / name), FAST + extra)
    result = engine.run(cfg, run_dir)
    assert result["status"] == "completed"
    return [(h["train_loss"], h["online"], h["avg"]) for h in result["history"]]


def _close(a, b, rel):
    assert len(a) == len(b)
    for (loss_a, online_a, avg_a), (loss_b, online_b, avg_b) in zip(a, b):
        assert loss_a == pytest.approx(loss_b, rel=rel)
        for x, y in ((online_a, online_b), (avg_a, avg_b)):
            assert x.keys() == y.keys() and all(x[k] == pytest.approx(y[k], rel=rel, abs=1e-6) for k in x)


def test_a_compiled_run_equals_the_eager_run(tmp_path):
    eager = _run(tmp_path, "smoke/regression", "eager", [])
    _close(_run(tmp_path, "smoke/regression", "compiled", ["trainer.compile=true"]), eager, rel=1e-5)


def test_channels_last_puts_the_convolutions_in_it_and_trains_the_same(tmp_path):
    cfg, run_dir = compose_run("smoke/classification", "sema", 0, str(tmp_path / "probe"),
                               FAST + ["trainer.channels_last=true"])
    trainer = engine.Trainer(cfg, run_dir)
    convs = [m.weight for m in trainer.model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() for w in convs)
    plain = _run(tmp_path, "smoke/classification", "plain", ["trainer.channels_last=false"])
    _close(_run(tmp_path, "smoke/classification", "cl", ["trainer.channels_last=true"]), plain, rel=1e-4)


def test_a_background_write_saves_the_state_as_it_was_when_save_was_called(tmp_path):
    live = {"weights": torch.arange(4.0), "history": [{"epoch": 1}], "step": 3}
    writer = ckpt.CheckpointWriter(background=True)
    writer.save(tmp_path / "a.pt", live)
    live["weights"].add_(100.0)  # training goes on while the thread writes
    live["history"].append({"epoch": 2})
    writer.save(tmp_path / "b.pt", live)  # waits for a.pt first
    writer.wait()
    a, b = (ckpt.load_checkpoint(tmp_path / n) for n in ("a.pt", "b.pt"))
    assert a["weights"].tolist() == [0.0, 1.0, 2.0, 3.0] and a["history"] == [{"epoch": 1}] and a["step"] == 3
    assert b["weights"].tolist() == [100.0, 101.0, 102.0, 103.0] and len(b["history"]) == 2
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_a_failed_background_write_is_raised_once_and_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    ckpt.save_checkpoint(path, {"step": 1})
    writer = ckpt.CheckpointWriter(background=True)
    writer.save(path, {"step": 2, "unpicklable": lambda: None})
    with pytest.raises(RuntimeError, match="writing the checkpoint failed"):
        writer.wait()
    writer.wait()  # raised once
    assert ckpt.load_checkpoint(path) == {"step": 1} and not list(tmp_path.glob(".*.tmp"))


def test_the_engine_checkpoint_is_complete_when_the_run_returns(tmp_path):
    cfg, run_dir = compose_run("smoke/classification", "sema", 0, str(tmp_path), FAST)
    engine.run(cfg, run_dir)
    state = ckpt.load_checkpoint(run_dir / ckpt.CHECKPOINT_FILE)
    result = json.loads((run_dir / "result.json").read_text())
    assert state["epoch"] == cfg.trainer.epochs == len(result["history"])


def test_the_host_copy_keeps_container_types_and_state_dict_metadata():
    from collections import OrderedDict, namedtuple

    sd = nn.BatchNorm1d(3).state_dict()
    pair = namedtuple("Pair", "a b")
    copied = ckpt.host_copy({"model": sd, "pair": pair(torch.ones(1), 2)})
    assert type(copied["model"]) is OrderedDict and copied["model"]._metadata == sd._metadata
    assert copied["pair"].b == 2 and torch.equal(copied["pair"].a, torch.ones(1))
    assert copied["model"]["running_mean"].data_ptr() != sd["running_mean"].data_ptr()


def test_activation_checkpointing_recomputes_the_same_run_and_is_refused_where_not_offered(tmp_path):
    cfg, run_dir = compose_run("smoke/lm", "sema", 0, str(tmp_path / "probe"),
                               FAST + ["trainer.activation_checkpointing=true"])
    assert engine.Trainer(cfg, run_dir).model.is_gradient_checkpointing
    plain = _run(tmp_path, "smoke/lm", "plain", [])
    _close(_run(tmp_path, "smoke/lm", "recomputed", ["trainer.activation_checkpointing=true"]), plain, rel=1e-6)
    cfg, run_dir = compose_run("smoke/regression", "sema", 0, str(tmp_path / "refused"),
                               FAST + ["trainer.activation_checkpointing=true"])
    with pytest.raises(ValueError, match="trainer.activation_checkpointing=true: the regression task does not offer"):
        engine.run(cfg, run_dir)
