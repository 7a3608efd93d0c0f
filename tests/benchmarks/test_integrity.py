"""Never a mislabelled or lost result: digests on checkpoints and weights, the config inside the checkpoint,
a failure after a good checkpoint resumes from it, leftovers of interrupted writes are removed."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from benchmarks import checkpoint as ckpt
from benchmarks import engine
from benchmarks.integrity import CorruptFile, remove_stale_temporaries, sha256_of, verify, write_verified
from benchmarks.recipes import compose_run
from run_helpers import InterruptAtStep

FAST = ["logger.wandb.mode=disabled", "trainer.num_threads=1", "trainer.checkpoint_every_steps=3"]


def smoke(root, method="sema", *extra):
    return compose_run("smoke/classification", method, 0, str(root), [*FAST, *extra])


def test_a_verified_file_round_trips_and_any_change_is_named(tmp_path):
    path = tmp_path / "f.bin"
    write_verified(path, lambda tmp: open(tmp, "wb").write(b"abc" * 1000))
    verify(path, "do X")
    assert (tmp_path / "f.bin.sha256").read_text().split() == [sha256_of(path)[0], "3000"]
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    data = bytearray(path.read_bytes())
    data[1234] ^= 1  # one flipped bit
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFile, match=r"f.bin is damaged: 3000 bytes with SHA-256 .* but it was written as 3000 "
                                          r"bytes .*; do X"):
        verify(path, "do X")
    path.unlink()
    with pytest.raises(CorruptFile, match="f.bin is missing; do X"):
        verify(path, "do X")
    plain = tmp_path / "legacy.bin"
    plain.write_bytes(b"written before digests existed")
    verify(plain, "do X")  # no digest recorded: accepted as it is


def test_a_crash_between_the_two_renames_leaves_a_file_that_verifies(tmp_path):
    path = tmp_path / "f.bin"
    write_verified(path, lambda tmp: open(tmp, "wb").write(b"old"))
    path.write_bytes(b"new content")  # the file renamed into place, its digest still pending:
    digest, size = sha256_of(path)
    (tmp_path / "f.bin.sha256.tmp").write_text(f"{digest}  {size}\n")
    verify(path, "do X")
    assert not (tmp_path / "f.bin.sha256.tmp").exists() and digest in (tmp_path / "f.bin.sha256").read_text()


def test_stale_temporaries_are_removed_and_nothing_else(tmp_path):
    (tmp_path / "weights").mkdir()
    leftovers = [tmp_path / ".checkpoint.pt.ab12.tmp", tmp_path / ".result.json.x9.tmp",
                 tmp_path / "weights" / ".online.safetensors.q1.tmp", tmp_path / "checkpoint.pt.sha256.tmp"]
    keep = [tmp_path / "checkpoint.pt", tmp_path / "result.json", tmp_path / ".lock", tmp_path / "weights" / "a.bin"]
    for f in leftovers + keep:
        f.write_text("x")
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted(leftovers)
    assert all(f.exists() for f in keep) and not any(f.exists() for f in leftovers)


def test_a_corrupt_checkpoint_is_named_with_what_to_do(tmp_path):
    cfg, run_dir = smoke(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        engine.run(cfg, run_dir, progress=InterruptAtStep(13))
    path = run_dir / ckpt.CHECKPOINT_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFile, match=r"checkpoint.pt is damaged: .*; delete it to restart the run from epoch 0"):
        engine.run(cfg, run_dir)
    for content in (b"", b"\x80garbage"):  # unreadable, with no digest to compare
        path.write_bytes(content)
        (run_dir / "checkpoint.pt.sha256").unlink(missing_ok=True)
        with pytest.raises(CorruptFile, match=r"checkpoint.pt cannot be read as a checkpoint .*delete it to restart"):
            engine.run(cfg, run_dir)
    ckpt.save_checkpoint(path, {"weights": torch.zeros(1)})  # readable, not ours
    with pytest.raises(CorruptFile, match=r"lacks \['model', 'optimizer'"):
        engine.run(cfg, run_dir)


def test_the_checkpoint_carries_its_config_so_an_emptied_result_json_cannot_mix_two_runs(tmp_path):
    cfg, run_dir = smoke(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        engine.run(cfg, run_dir, progress=InterruptAtStep(13))
    (run_dir / "result.json").write_text("")  # the config check of result.json is gone
    other, _ = smoke(tmp_path, "sema", "optim.lr=0.2")
    with pytest.raises(engine.ConfigMismatch, match=r"checkpoint.pt was written by a run with a different config"
                                                     r":\n  optim.lr: 0.05 -> 0.2"):
        engine.run(other, run_dir)


def test_a_checkpoint_of_older_code_that_kept_the_averaging_node_still_resumes(tmp_path):
    """Checkpoints made before READ_THROUGH_METHOD carry `averaging` (without tail_start): compared as a rerun
    compares them, the run resumes and finishes as if never cut."""
    cfg, straight = smoke(tmp_path / "straight")
    done = engine.run(cfg, straight)
    cfg, run_dir = smoke(tmp_path / "cut")
    with pytest.raises(KeyboardInterrupt):
        engine.run(cfg, run_dir, progress=InterruptAtStep(13))
    path = run_dir / ckpt.CHECKPOINT_FILE
    state = ckpt.load_checkpoint(path)
    state["config"]["averaging"] = {"decay": 0.9, "warmup_epochs": 0.5, "switch_start": 1.0}  # the old layout
    ckpt.save_checkpoint(path, state)
    result = json.loads((run_dir / "result.json").read_text())
    del result["config"]["averaging"]["tail_start"]
    (run_dir / "result.json").write_text(json.dumps(result))
    assert engine.run(cfg, run_dir)["final"] == done["final"]


def test_a_completed_run_with_damaged_weights_is_not_skipped(tmp_path):
    cfg, run_dir = smoke(tmp_path)
    engine.run(cfg, run_dir)
    weights = run_dir / "weights" / "average.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    with pytest.raises(CorruptFile, match=r"average.safetensors is damaged: 100 bytes .*delete .* to redo the run"):
        engine.run(cfg, run_dir)


def test_a_failure_after_a_good_checkpoint_resumes_from_it_and_finishes_bit_for_bit(tmp_path, monkeypatch):
    cfg, straight = smoke(tmp_path / "straight")
    engine.run(cfg, straight)
    cfg, run_dir = smoke(tmp_path / "cut")
    real_save = engine._save_weights

    def disk_full(weights, path):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(engine, "_save_weights", disk_full)  # the final save fails: every epoch is checkpointed
    with pytest.raises(OSError, match="No space left"):
        engine.run(cfg, run_dir)
    assert json.loads((run_dir / "result.json").read_text())["status"] == "failed"
    assert (run_dir / ckpt.CHECKPOINT_FILE).exists()  # kept
    monkeypatch.setattr(engine, "_save_weights", real_save)
    resumed = engine.run(cfg, run_dir)
    assert resumed["status"] == "completed"
    a, b = (json.loads((d / "result.json").read_text()) for d in (straight, run_dir))
    keys = ("epoch", "step", "train_loss", "avg", "online")
    assert [{k: h[k] for k in keys} for h in a["history"]] == [{k: h[k] for k in keys} for h in b["history"]]
    for name in ("online.safetensors", "average.safetensors"):
        wa, wb = load_file(straight / "weights" / name), load_file(run_dir / "weights" / name)
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
        assert oct(os.stat(run_dir / "weights" / name).st_mode & 0o777) == "0o644"


def test_an_emptied_or_garbled_result_json_of_a_run_without_checkpoint_just_runs_again(tmp_path):
    cfg, run_dir = smoke(tmp_path, "baseline")
    run_dir.mkdir(parents=True)
    for content in (b"{}", b"\xff\xfe"):
        (run_dir / "result.json").write_bytes(content)
        assert engine.run(cfg, run_dir)["status"] == "completed"  # no "already holds a None run"
        (run_dir / "result.json").write_bytes(content)
        for leftover in run_dir.glob("checkpoint.pt*"):
            leftover.unlink()


def test_the_start_of_a_run_promotes_a_pending_digest_left_by_a_crash_between_the_renames(tmp_path):
    path = tmp_path / "checkpoint.pt"
    write_verified(path, lambda tmp: open(tmp, "wb").write(b"old"))
    path.write_bytes(b"new")  # renamed into place; its digest still pending
    digest, size = sha256_of(path)
    (tmp_path / "checkpoint.pt.sha256.tmp").write_text(f"{digest}  {size}\n")
    assert remove_stale_temporaries(tmp_path) == []  # not deleted: put in place
    verify(path, "do X")
