"""SWA in the engine: start in epochs, and the average's BatchNorm statistics re-estimated before evaluation
(method.bn_update_batches, through SWA's prepare_for_eval hook), in parity with torch.optim.swa_utils.update_bn,
deterministic across a resume."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file
from torch.optim.swa_utils import update_bn as torch_update_bn
from torch.utils.data import DataLoader

import sema
from benchmarks import engine
from benchmarks.methods import method_kwargs
from benchmarks.recipes import compose_run

FAST = ["logger.wandb.mode=disabled", "trainer.num_threads=1"]


def swa_smoke(tmp_path, *extra):
    return compose_run("smoke/classification", "swa", 0, str(tmp_path), [*FAST, *extra])


def bn_buffers(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items() if ".running_" in k or "num_batches" in k}


def test_swa_config_converts_start_epochs_and_passes_the_bn_setting_to_sema(tmp_path):
    cfg, _ = swa_smoke(tmp_path, "method.start_epochs=1.5")
    kwargs = method_kwargs(cfg.method, 8)
    assert kwargs == {"start_steps": 12, "update_every": 1, "buffers": "average", "bn_update_batches": 50}
    swa = sema.SWA(torch.nn.Linear(2, 2), **kwargs)
    assert (swa.start_steps, swa.bn_update_batches) == (12, 50)
    assert isinstance(swa, sema.protocol.PreparesForEval)


def test_bad_bn_update_settings_are_rejected():
    with pytest.raises(ValueError, match="bn_update_batches needs buffers='average' or 'copy'"):
        sema.SWA(torch.nn.Linear(2, 2), buffers="ignore", bn_update_batches=5)
    with pytest.raises(ValueError, match=r"bn_update_batches"):
        sema.SWA(torch.nn.Linear(2, 2), bn_update_batches=0)


def test_engine_bn_update_matches_swa_utils_and_leaves_training_untouched(tmp_path):
    cfg, run_dir = swa_smoke(tmp_path, "method.bn_update_batches=3")
    trainer = engine.Trainer(cfg, run_dir)
    trainer.train_epoch()
    # The reference: swa_utils on a copy of the same averaged weights, over the batches the engine documents
    # (a loader shuffled with the fixed seed _epoch_seed(seed, 0), its first bn_update_batches batches).
    reference = copy.deepcopy(trainer.averager.average)
    loader = DataLoader(trainer.task.train_set, batch_size=cfg.task.batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(engine._epoch_seed(cfg.seed, 0)))
    batches = [batch for _, batch in zip(range(3), loader)]
    torch_update_bn(batches, reference)
    averaged_before = {k: v.clone() for k, v in trainer.averager.average.named_parameters()}
    model_before = {k: v.clone() for k, v in trainer.model.state_dict().items()}

    avg, online, reused = trainer.evaluate(switched=False)

    ours = bn_buffers(trainer.averager.average)
    theirs = bn_buffers(reference)
    assert ours.keys() == theirs.keys() and len(ours) == 3 * 3  # 3 BatchNorm layers: mean, var, count
    for key, value in theirs.items():
        torch.testing.assert_close(ours[key], value, rtol=0, atol=0)
    assert all(v.item() == 3 for k, v in ours.items() if "num_batches" in k)
    # the averaged weights themselves, the online model (BN statistics included) and the RNG are unchanged
    for k, v in trainer.averager.average.named_parameters():
        assert torch.equal(v, averaged_before[k])
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, model_before[k]), k
    assert trainer.model.training and not reused and avg != online
    # a second pass draws the same batches (same statistics) and leaves the RNG where it was (the evaluation's
    # own loaders draw from it, so this is checked around the pass alone)
    rng_before = torch.get_rng_state()
    trainer.prepare_average(trainer.model, trainer.averager)
    assert torch.equal(torch.get_rng_state(), rng_before)
    again = bn_buffers(trainer.averager.average)
    assert again.keys() == ours.keys() and all(torch.equal(again[k], ours[k]) for k in ours)


def test_without_bn_update_the_average_keeps_the_uniformly_averaged_statistics(tmp_path):
    cfg, run_dir = swa_smoke(tmp_path, "method.bn_update_batches=null")
    trainer = engine.Trainer(cfg, run_dir)
    trainer.train_epoch()
    before = bn_buffers(trainer.averager.average)
    trainer.evaluate(switched=False)
    after = bn_buffers(trainer.averager.average)
    assert all(torch.equal(before[k], after[k]) for k in before)


class StopAfterFirstEpoch:
    """Progress that interrupts the run after the first epoch's checkpoint (like Ctrl-C: not recorded as failed)."""

    def start(self, *args):
        pass

    def step(self, steps):
        pass

    def epoch(self, record):
        raise KeyboardInterrupt

    def end(self, result):
        pass


@pytest.mark.slow
def test_swa_smoke_run_saves_recalibrated_average_and_resumes_bit_for_bit(tmp_path):
    cfg, run_dir = swa_smoke(tmp_path / "straight", "method.start_epochs=0.5")
    result = engine.run(cfg, run_dir)
    assert result["status"] == "completed" and result["method"] == "swa"
    assert all(h["avg"] is not None and h["avg"] != h["online"] for h in result["history"])
    average = load_file(run_dir / "weights" / "average.safetensors")
    # the saved average holds re-estimated statistics: a pass over all (fewer than 50) training batches
    counts = {k: v.item() for k, v in average.items() if "num_batches" in k}
    assert counts and len(set(counts.values())) == 1 and list(counts.values())[0] > 16

    cfg2, run_dir2 = swa_smoke(tmp_path / "resumed", "method.start_epochs=0.5")
    with pytest.raises(KeyboardInterrupt):
        engine.run(cfg2, run_dir2, progress=StopAfterFirstEpoch())
    resumed = engine.run(cfg2, run_dir2)
    strip = lambda h: [{k: v for k, v in r.items() if k != "time_s"} for r in h]  # noqa: E731
    assert strip(resumed["history"]) == strip(result["history"])
    for name in ("online.safetensors", "average.safetensors"):
        a, b = load_file(run_dir / "weights" / name), load_file(run_dir2 / "weights" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert json.loads((run_dir2 / "result.json").read_text())["final"] == result["final"]
