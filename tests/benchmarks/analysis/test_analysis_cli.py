"""End to end: sema-analyze on tiny real run directories made by the engine's smoke profile.

The classification task on sklearn digits with the project's tiny CNN (BatchNorm included), 2 epochs of 8 steps,
for the baseline, EMA and SEMA at seed 0, run in process by `benchmarks.engine.run` exactly as `sema-bench` composes
them. `.hydra/config.yaml` is written like the suite does, except for the EMA run, which checks the fallback on
result.json's resolved config.
"""

import json

import pytest
import torch
from omegaconf import OmegaConf

from benchmarks.analysis.cli import main
from benchmarks.analysis.hessian import mean_loss
from benchmarks.analysis.loading import load_run


def engine_run(root, method: str, seed: int = 0):
    from benchmarks import engine
    from benchmarks.recipes import compose_run

    cfg, run_dir = compose_run("smoke/classification", method, seed, str(root),
                               ["logger.wandb.mode=disabled", "trainer.num_threads=1"])
    engine.run(cfg, run_dir)
    if method != "ema":
        (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    torch.set_num_threads(2)
    return run_dir


FAST = ["--num-batches", "2", "--lanczos-products", "60", "--power-iterations", "3", "--probes", "2", "--rho", "0.01", "0.1",
        "--sharpness-steps", "2", "--grid", "3", "--interp-points", "3", "--interp-range", "0", "1",
        "--threads", "1",
        "--pairs", "baseline:ema", "ema:sema"]


@pytest.mark.slow
def test_sema_analyze_writes_analysis_json_for_a_sweep(tmp_path):
    runs = {method: engine_run(tmp_path, method) for method in ("baseline", "ema", "sema")}
    assert main([str(tmp_path), *FAST]) == 0

    ema = json.loads((runs["ema"] / "analysis.json").read_text())
    for solution in ("online", "average"):
        out = ema[solution]
        assert set(out["sharpness"]) == {"0.01", "0.1"}
        assert out["sharpness"]["0.1"] >= 0.0
        assert out["hessian_top_eig"] > 0.0 and out["hessian_trace"] != 0.0
        assert out["hessian_eig_solver"] == "lanczos" and out["hessian_min_eig"] < out["hessian_top_eig"]
        assert 0 < out["hessian_top_eig_iterations"] <= 60 + 20  # the budget, to about one Lanczos basis
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

    # A SEMA run that ends on a switch holds the same weights twice: measured once, no online-average line.
    sema_run = load_run(runs["sema"], num_batches=1)
    ended_on_switch = all(torch.equal(sema_run.online[k], sema_run.average[k]) for k in sema_run.online)
    sema = json.loads((runs["sema"] / "analysis.json").read_text())
    assert ("online-average" not in sema["interpolation"]) == ended_on_switch
    assert (sema["average"] == sema["online"]) == ended_on_switch

    # A second call skips analysed runs; --force redoes them.
    stamp = (runs["ema"] / "analysis.json").stat().st_mtime_ns
    assert main([str(runs["ema"]), *FAST]) == 0
    assert (runs["ema"] / "analysis.json").stat().st_mtime_ns == stamp


@pytest.mark.parametrize(
    "extra, message",
    [(["--probes", "0"], "--probes must be >= 1"), (["--lanczos-products", "0"], "--lanczos-products must be >= 1"),
     (["--eigen-solver", "qr"], "invalid choice: 'qr'"), (["--rho", "-1"], "--rho values must be > 0"),
     (["--pairs", "ema-sema"], "FROM_METHOD:TO_METHOD"), ([], "no result.json")],
)
def test_bad_input_exits_with_a_clear_message(tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path), *extra])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_an_unreadable_result_json_is_listed_and_the_other_runs_are_analysed(tmp_path, capsys):
    good = engine_run(tmp_path, "baseline")
    torn = tmp_path / "torn"
    torn.mkdir()
    (torn / "result.json").write_bytes(b"\xff\xfe not json")
    assert main([str(tmp_path), *FAST[:-3], "--eigen-solver", "power"]) == 1  # one unreadable run: non-zero exit
    out = capsys.readouterr().out
    assert f"UNREADABLE {torn / 'result.json'}" in out and f"done {good}" in out
    online = json.loads((good / "analysis.json").read_text())["online"]
    # power iteration: the largest-magnitude eigenvalue in at most --power-iterations products, no smallest one
    assert online["hessian_eig_solver"] == "power" and "hessian_min_eig" not in online
    assert online["hessian_top_eig_iterations"] <= 3
