"""trainer.strategy=fsdp2 (benchmarks/strategy.py) on the CPU with gloo: the lm smoke run sharded over 2 torchrun
processes trains like DDP; a run killed inside an epoch resumes from its DCP checkpoint to the result of a run
that never stopped, bit for bit; a checkpoint saved at 2 ranks resumes at 1, its tensors exactly those saved."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from benchmarks import engine
from benchmarks.recipes import compose_run
from run_helpers import InterruptAtStep
from benchmarks.integrity import CorruptFile
from benchmarks.strategy import DCP_DIR, MANIFEST_FILE, TRAINER_STATE_FILE

FAST = ["logger.wandb.mode=disabled", "trainer.num_threads=1"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
KEYS = ("epoch", "step", "train_loss", "lr", "switched", "avg", "online")


def _cli(out_dir, nproc, *extra):
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else []
    return [sys.executable, *launcher, "-m", "benchmarks.cli", "recipe=smoke/lm", "method=sema",
            f"out_dir={out_dir}", *FAST, *extra]


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the launcher and every process under it (torchrun's workers run in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    todo, tree = [proc.pid], []
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def _run(cmd, timeout=300) -> subprocess.CompletedProcess:
    """subprocess.run, but a timeout kills the whole process group (torchrun and its workers), not torchrun alone."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_tree(proc)
        out, err = proc.communicate()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _result(out_dir):
    (path,) = out_dir.glob("**/result.json")
    return json.loads(path.read_text()), path.parent


def _history(result):
    return [{k: h[k] for k in KEYS} for h in result["history"]]


@pytest.mark.slow
@pytest.mark.ddp
def test_fsdp2_on_two_ranks_trains_like_ddp_and_writes_sharded_checkpoints(tmp_path):
    for name, strategy in (("ddp", "ddp"), ("fsdp2", "fsdp2")):
        proc = _run(_cli(tmp_path / name, 2, f"trainer.strategy={strategy}"))
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (ddp, ddp_dir), (fsdp, fsdp_dir) = _result(tmp_path / "ddp"), _result(tmp_path / "fsdp2")
    assert fsdp["status"] == "completed" and fsdp["runtime"]["world_size"] == 2
    for a, b in zip(_history(fsdp), _history(ddp), strict=True):  # reduce-scatter vs all-reduce: rounding only
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["avg"]["ppl"] == pytest.approx(b["avg"]["ppl"], rel=1e-5)
    assert (fsdp_dir / DCP_DIR / ".metadata").is_file() and (fsdp_dir / DCP_DIR / TRAINER_STATE_FILE).is_file()
    assert not (fsdp_dir / "checkpoint.pt").exists()
    for name in ("online", "average"):  # full tensors gathered from the shards, as DDP's
        a, b = (load_file(d / "weights" / f"{name}.safetensors") for d in (fsdp_dir, ddp_dir))
        assert a.keys() <= b.keys() and all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-5) for k in a)
    assert fsdp["throughput"]["tokens_per_s"] > 0 and fsdp["throughput"]["model_tflops_per_s"] > 0


def test_an_fsdp2_run_interrupted_inside_an_epoch_resumes_bit_for_bit(tmp_path):
    extra = FAST + ["trainer.strategy=fsdp2", "trainer.checkpoint_every_steps=3"]
    cfg, straight = compose_run("smoke/lm", "sema", 0, str(tmp_path / "straight"), extra)
    engine.run(cfg, straight)
    cfg, run_dir = compose_run("smoke/lm", "sema", 0, str(tmp_path / "cut"), extra)
    with pytest.raises(KeyboardInterrupt):
        engine.run(cfg, run_dir, progress=InterruptAtStep(cfg.trainer.max_steps_per_epoch + 4))  # inside epoch 2
    assert (run_dir / DCP_DIR).is_dir() and not torch.distributed.is_initialized()
    engine.run(cfg, run_dir)
    a, b = json.loads((straight / "result.json").read_text()), json.loads((run_dir / "result.json").read_text())
    assert _history(a) == _history(b) and a["final"] == b["final"]
    for name in ("online", "average"):
        wa, wb = (load_file(d / "weights" / f"{name}.safetensors") for d in (straight, run_dir))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _killed_after_first_checkpoint(out_dir, *extra):
    """Run the 2-rank job until its first DCP checkpoint is complete, then kill the whole job (like a lost node);
    returns the run directory (its result.json still says "running")."""
    proc = subprocess.Popen(_cli(out_dir, 2, *extra), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not list(out_dir.glob(f"**/{DCP_DIR}/{TRAINER_STATE_FILE}")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.05)
    finally:
        _kill_tree(proc)
    (state_file,) = out_dir.glob(f"**/{DCP_DIR}/{TRAINER_STATE_FILE}")
    run_dir = state_file.parent.parent
    assert json.loads((run_dir / "result.json").read_text())["status"] == "running"  # killed before the end
    return run_dir


@pytest.mark.slow
@pytest.mark.ddp
def test_a_two_rank_checkpoint_resumes_at_two_bit_for_bit(tmp_path):
    long = ["trainer.strategy=fsdp2", "trainer.epochs=3", "trainer.checkpoint_every_steps=1"]
    straight = _run(_cli(tmp_path / "straight", 2, *long))
    assert straight.returncode == 0, straight.stderr[-3000:]
    run_dir = _killed_after_first_checkpoint(tmp_path / "cut", *long)  # inside epoch 1
    at_one = tmp_path / "at_one"
    shutil.copytree(tmp_path / "cut", at_one)
    again = _run(_cli(tmp_path / "cut", 2, *long))
    assert again.returncode == 0, again.stderr[-3000:]
    (a, _), (b, _) = _result(tmp_path / "straight"), _result(tmp_path / "cut")
    assert b["status"] == "completed" and _history(a) == _history(b) and a["final"] == b["final"]
    # a checkpoint from inside an epoch does not resume at another world size (the epoch's examples are split
    # another way there): refused, saying so
    refused = _run(_cli(at_one, 1, *long))
    assert refused.returncode != 0 and "resumes only at world size 2" in refused.stdout + refused.stderr
    kept = at_one / run_dir.relative_to(tmp_path / "cut")  # nothing lost: the checkpoint and "running" kept
    assert json.loads((kept / "result.json").read_text())["status"] == "running" and (kept / DCP_DIR).is_dir()


@pytest.mark.slow
@pytest.mark.ddp
def test_an_epoch_end_checkpoint_of_two_ranks_resumes_at_one_with_the_saved_tensors(tmp_path):
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    long = ["trainer.strategy=fsdp2", "trainer.epochs=3"]
    run_dir = _killed_after_first_checkpoint(tmp_path / "cut", *long)  # after an epoch end
    saved_epoch = torch.load(run_dir / DCP_DIR / TRAINER_STATE_FILE, weights_only=True)["epoch"]
    # DCP reshards into one process's tensors: exactly those saved (read back a second way, dcp_to_torch_save)
    dcp_to_torch_save(run_dir / DCP_DIR, tmp_path / "full.pt")
    full = torch.load(tmp_path / "full.pt", weights_only=False)
    # Every file DCP wrote is in the manifest, with its digest; one flipped byte in rank 1's shard is named.
    manifest = (run_dir / DCP_DIR / MANIFEST_FILE).read_text().splitlines()
    listed = sorted(line.split()[2] for line in manifest)
    assert listed == sorted([".metadata", "__0_0.distcp", "__1_0.distcp"])
    damaged = tmp_path / "damaged" / run_dir.name
    shutil.copytree(run_dir, damaged)
    shard = damaged / DCP_DIR / "__1_0.distcp"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 1
    shard.write_bytes(bytes(data))
    cfg, _ = compose_run("smoke/lm", "sema", 0, str(tmp_path / "cut"), FAST + long)
    _, _, _, own = engine._distributed(need_group=True)
    try:
        with pytest.raises(CorruptFile, match=r"__1_0.distcp is \d+ bytes with SHA-256 .*delete that directory"):
            engine.Trainer(cfg, damaged).load_checkpoint()
        trainer = engine.Trainer(cfg, run_dir)
        state = trainer.load_checkpoint()
        assert state is not None and trainer.epoch == saved_epoch and state["world_size"] == 2
        weights = trainer.weights()
        (online, _), (average, _) = weights["online"], weights["average"]
        assert online and all(torch.equal(online[k], full["model"][k]) for k in online)
        assert average and all(torch.equal(average[k], full["averager"]["average"][k]) for k in average)
    finally:
        if own:
            torch.distributed.destroy_process_group()
    one = _run(_cli(tmp_path / "cut", 1, *long))
    assert one.returncode == 0, one.stderr[-3000:]
    result, _ = _result(tmp_path / "cut")
    assert result["status"] == "completed" and result["runtime"]["world_size"] == 1
    assert [h["epoch"] for h in result["history"]] == [1, 2, 3]


def test_the_fsdp2_bf16_policy_computes_in_bf16_and_keeps_float32_shards_and_average(tmp_path):
    extra = FAST + ["trainer.strategy=fsdp2", "trainer.fsdp_param_dtype=bf16"]
    cfg, run_dir = compose_run("smoke/lm", "sema", 0, str(tmp_path / "bf16"), extra)
    result = engine.run(cfg, run_dir)
    assert result["runtime"]["precision"] == "bf16"
    cfg, plain_dir = compose_run("smoke/lm", "sema", 0, str(tmp_path / "fp32"), FAST + ["trainer.strategy=fsdp2"])
    plain = engine.run(cfg, plain_dir)
    assert result["final"]["ppl"] != plain["final"]["ppl"]  # bf16 matmuls: another trajectory ...
    assert result["final"]["ppl"] == pytest.approx(plain["final"]["ppl"], rel=2e-2)  # ... close to float32's
    for name in ("online", "average"):
        assert all(t.dtype == torch.float32 for t in load_file(run_dir / "weights" / f"{name}.safetensors").values())
