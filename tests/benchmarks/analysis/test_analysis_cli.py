"""End to end: sema-analyze on tiny real run directories.

The run directories are written by hand here, in the layout of docs/ARCHITECTURE.md ("Run directory layout"):
the classification task on sklearn digits with the project's tiny CNN (BatchNorm included), trained for two
short epochs with plain SGD (baseline), sema.EMA and sema.SEMA at the same seed.
"""

import json

import pytest
import torch
from omegaconf import OmegaConf

from benchmarks.analysis.cli import main
from benchmarks.analysis.hessian import mean_loss
from benchmarks.analysis.loading import load_run

TASK = {
    "name": "classification", "dataset": "digits", "model": "tiny_cnn", "batch_size": 32, "eval_batch_size": 128,
    "max_train_samples": 128, "max_eval_samples": 64, "augment": True,
}


def write_run(root, method: str, seed: int = 0):
    """Train briefly and write result.json, .hydra/config.yaml and weights/*.safetensors like the engine does."""
    import sema
    from safetensors.torch import save_file

    from benchmarks.tasks import classification
    from benchmarks.tasks.protocol import RunContext

    run_dir = root / f"{method}_seed{seed}"
    torch.manual_seed(seed)
    setup = classification.setup(
        classification.Config(**{k: v for k, v in TASK.items() if k != "name"}),
        RunContext(device=torch.device("cpu"), seed=seed, out_dir=run_dir, cache_dir=root / "cache"),
    )
    model = setup.model
    averager = {"baseline": None, "ema": lambda m: sema.EMA(m, decay=0.8),
                "sema": lambda m: sema.SEMA(m, decay=0.8)}[method]
    averager = averager(model) if averager else None
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loader = torch.utils.data.DataLoader(setup.train_set, batch_size=32, shuffle=True)
    model.train()
    for _ in range(2):
        for batch in loader:
            optimizer.zero_grad()
            setup.train_loss(model, batch).backward()
            optimizer.step()
            if averager:
                averager.update()
        if averager:
            averager.epoch_end()
    (run_dir / "weights").mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, run_dir / "weights/online.safetensors")
    if averager:
        average = averager.average.state_dict()
        save_file({k: v.contiguous() for k, v in average.items()}, run_dir / "weights/average.safetensors")
    config = {"task": TASK, "method": {"name": method}, "seed": seed, "profile": "smoke"}
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(OmegaConf.create(config), run_dir / ".hydra/config.yaml")
    result = {"status": "completed", "task": "classification", "dataset": "digits", "model": "tiny_cnn",
              "method": method, "seed": seed, "profile": "smoke", "headline": "top1"}
    (run_dir / "result.json").write_text(json.dumps(result))
    return run_dir


FAST = ["--num-batches", "2", "--power-iterations", "3", "--probes", "2", "--rho", "0.01", "0.1",
        "--sharpness-steps", "2", "--grid", "3", "--interp-points", "3", "--interp-range", "0", "1", "--threads", "1",
        "--pairs", "baseline:ema", "ema:sema"]


@pytest.mark.slow
def test_sema_analyze_writes_analysis_json_for_a_sweep(tmp_path):
    runs = {method: write_run(tmp_path, method) for method in ("baseline", "ema", "sema")}
    assert main([str(tmp_path), *FAST]) == 0

    ema = json.loads((runs["ema"] / "analysis.json").read_text())
    for solution in ("online", "average"):
        out = ema[solution]
        assert set(out["sharpness"]) == {"0.01", "0.1"}
        assert out["sharpness"]["0.1"] >= 0.0
        assert out["hessian_top_eig"] > 0.0 and out["hessian_trace"] != 0.0
        assert len(out["landscape_1d"]["loss"]) == 3 and len(out["landscape_2d"]["loss"]) == 3
        # The middle of the landscape grid is the solution itself.
        assert out["landscape_1d"]["loss"][1] == pytest.approx(out["loss"], rel=1e-5)
    assert ema["mode"] == "eval" and ema["seed"] == 0 and ema["settings"]["probes"] == 2

    # Recompute the losses independently: rebuild the run, load the weights, the same batches, eval mode.
    run = load_run(runs["ema"], num_batches=2, seed=0)
    run.model.eval()
    for solution, state in (("online", run.online), ("average", run.average)):
        run.load(state)
        assert ema[solution]["loss"] == pytest.approx(mean_loss(run.model, run.loss_fn, run.batches), rel=1e-6)
    line = ema["interpolation"]["online-average"]
    assert line["alpha"] == [0.0, 0.5, 1.0]
    assert line["loss"][0] == pytest.approx(ema["online"]["loss"], rel=1e-5)
    assert line["loss"][-1] == pytest.approx(ema["average"]["loss"], rel=1e-5)
    assert len(line["metric"]) == 3 and line["metric_name"] == "top1"

    # Pairs across runs of the same seed: the EMA run holds both of its pairs.
    baseline = json.loads((runs["baseline"] / "analysis.json").read_text())
    assert baseline["average"] is None and "online-average" not in baseline["interpolation"]
    pair = ema["interpolation"]["baseline-ema"]
    assert pair == baseline["interpolation"]["baseline-ema"]
    assert pair["loss"][0] == pytest.approx(baseline["online"]["loss"], rel=1e-5)
    assert pair["loss"][-1] == pytest.approx(ema["average"]["loss"], rel=1e-5)
    assert ema["interpolation"]["ema-sema"]["from_weights"] == "average"
    for run_dir in runs.values():
        payload = json.loads((run_dir / "analysis.json").read_text())
        for plot in payload["plots"]:
            assert (run_dir / plot).read_bytes()[:4] == b"\x89PNG"

    # A second call skips analysed runs; --force redoes them.
    stamp = (runs["ema"] / "analysis.json").stat().st_mtime_ns
    assert main([str(runs["ema"]), *FAST]) == 0
    assert (runs["ema"] / "analysis.json").stat().st_mtime_ns == stamp


@pytest.mark.parametrize(
    "extra, message",
    [(["--probes", "0"], "--probes must be >= 1"), (["--rho", "-1"], "--rho values must be > 0"),
     ([], "no result.json")],
)
def test_bad_input_exits_with_a_clear_message(tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path), *extra])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
