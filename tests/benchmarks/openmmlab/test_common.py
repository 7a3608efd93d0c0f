"""The OpenMMLab runners' shared parts on a toy mmengine model (mmengine only; no mmcv build needed): the lr
follows the engine's schedule step by step, the sema hook averages and switches, both weights are evaluated each
epoch, the record has the engine's result.json shape, and a run interrupted after epoch 1 resumes to the same end.
Plus the config translation of the mmdet/mmseg runners."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.optim import lr_multiplier
from benchmarks.openmmlab import common
from benchmarks.recipes import compose_run

mmengine = pytest.importorskip("mmengine")  # a base dependency of the [mmengine] extra, present in the dev venv


def _toy_runner(tmp_path, method: str, epochs: int = 3, resume_from=None, extra_hooks=()):
    from mmengine.evaluator import BaseMetric
    from mmengine.model import BaseModel
    from mmengine.registry import METRICS
    from mmengine.runner import Runner

    class Toy(BaseModel):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(2, 1)

        def forward(self, inputs, targets, mode="tensor"):
            out = self.linear(torch.stack(inputs)).squeeze(-1)
            y = torch.stack(targets)
            if mode == "loss":
                return {"loss": F.mse_loss(out, y)}
            return [{"pred": o, "target": t} for o, t in zip(out, y)]

    if "RunnerToyMSE" not in METRICS.module_dict:

        @METRICS.register_module()
        class RunnerToyMSE(BaseMetric):
            def process(self, data_batch, data_samples):
                self.results.extend(float((s["pred"] - s["target"]) ** 2) for s in data_samples)

            def compute_metrics(self, results):
                return {"mse": sum(results) / len(results)}

    torch.manual_seed(0)  # Toy() is built here, before the Runner seeds: the same initial weights in every run
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(32, 2, generator=generator)
    data = [{"inputs": xi, "targets": xi @ torch.tensor([1.5, -2.0]) + 0.5} for xi in x]
    cfg, _ = compose_run("smoke/classification", method, 0, str(tmp_path / "runs"),
                         ["optim.name=sgd", "optim.lr=0.05", "optim.schedule=cosine", "optim.warmup_epochs=1",
                          f"trainer.epochs={epochs}", "trainer.grad_clip=null"])
    batch_size, steps_per_epoch = 4, 8
    result = common.base_result(cfg, "mse", False, "toy", [])
    sema_hook, lr_hook, recorder = common.make_hooks(cfg, steps_per_epoch, steps_per_epoch * epochs, result)
    loader = dict(batch_size=batch_size, dataset=data, collate_fn=dict(type="pseudo_collate"), num_workers=0)
    runner = Runner(
        model=Toy(),
        train_dataloader=dict(sampler=dict(type="DefaultSampler", shuffle=True), **loader),
        val_dataloader=dict(sampler=dict(type="DefaultSampler", shuffle=False), **loader),
        val_evaluator=dict(type="RunnerToyMSE"),
        optim_wrapper=common.optim_wrapper_cfg(cfg.optim, cfg.trainer.grad_clip),
        **common.runner_kwargs(cfg, tmp_path, epochs, [sema_hook, lr_hook, recorder, *extra_hooks], resume_from),
    )
    return cfg, runner, sema_hook, result, steps_per_epoch


def test_sema_hook_run_records_both_weights_and_switches_every_epoch(tmp_path):
    cfg, runner, sema_hook, result, steps = _toy_runner(tmp_path, "sema")
    runner.train()
    history = result["history"]
    assert [r["epoch"] for r in history] == [1, 2, 3] and [r["step"] for r in history] == [8, 16, 24]
    # Smoke sema: switch_start=1, switch_every=1 -> the average is copied into the model after epochs 2 and 3; then
    # the evaluation of the model serves both (the engine's avg_reused_online rule). Epoch 1 evaluates both apart.
    assert [r["switched"] for r in history] == [False, True, True]
    assert history[0]["avg"] != history[0]["online"] and not history[0]["avg_reused_online"]
    assert all(r["avg"] == r["online"] and r["avg_reused_online"] for r in history[1:])
    factor = lr_multiplier(cfg.optim, steps, 3 * steps)
    for record in history:  # the lr of the epoch's last step follows the engine's schedule exactly
        assert record["lr"] == pytest.approx(cfg.optim.lr * factor(record["step"] - 1))
    assert history[0]["train_loss"] > history[-1]["train_loss"]
    assert result["final"] == history[-1]["avg"] and result["best_epoch"] in (1, 2, 3)
    assert sema_hook.averager.step == 24


def test_toy_run_interrupted_after_epoch_1_resumes_to_the_same_end(tmp_path):
    from mmengine.hooks import Hook

    class InterruptAfterFirstEpoch(Hook):
        priority = "LOWEST"  # after the epoch-end checkpoint (VERY_LOW); like Ctrl-C, not recorded as failed

        def after_train_epoch(self, runner):
            raise KeyboardInterrupt

    _, straight, straight_hook, straight_result, _ = _toy_runner(tmp_path / "straight", "sema")
    straight.train()
    _, first, _, first_result, _ = _toy_runner(tmp_path / "resumed", "sema",
                                               extra_hooks=[InterruptAfterFirstEpoch()])
    with pytest.raises(KeyboardInterrupt):
        first.train()
    checkpoint = tmp_path / "resumed" / common.CHECKPOINT_FILE
    assert torch.load(checkpoint)["meta"]["epoch"] == 1  # plain data: the default weights_only load reads it
    _, second, hook, result, _ = _toy_runner(tmp_path / "resumed", "sema", resume_from=checkpoint)
    second.train()
    assert result["history"][0] == first_result["history"][0]  # restored, time_s included
    no_time = lambda history: [{k: v for k, v in r.items() if k != "time_s"} for r in history]  # noqa: E731
    assert no_time(result["history"]) == no_time(straight_result["history"])
    assert hook.averager.step == straight_hook.averager.step == 24
    for ours, theirs in ((second.model, straight.model), (hook.averager.average, straight_hook.averager.average)):
        assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()))


def test_ema_hook_evaluates_the_average_apart_from_the_model(tmp_path):
    _, runner, sema_hook, result, _ = _toy_runner(tmp_path, "ema", epochs=2)
    runner.train()
    last = result["history"][-1]
    assert last["switched"] is False and last["avg_reused_online"] is False
    assert last["avg"]["mse"] != last["online"]["mse"]
    # The recorded average is the averager's: evaluating its module by hand gives the same number.
    with torch.no_grad():
        model = sema_hook.averager.average
        data = runner.val_dataloader.dataset
        errors = [float((model.linear(d["inputs"]) - d["targets"]) ** 2) for d in data]
    assert last["avg"]["mse"] == pytest.approx(sum(errors) / len(errors), rel=1e-5)
    assert result["final"] == last["avg"] and result["final_online"] == last["online"]


def test_baseline_has_no_hook_and_reports_the_model(tmp_path):
    _, runner, sema_hook, result, _ = _toy_runner(tmp_path, "baseline", epochs=1)
    assert sema_hook is None
    runner.train()
    assert result["history"][0]["avg"] is None and result["final"] == result["final_online"]


def test_execute_writes_a_completed_or_failed_record(tmp_path):
    cfg, _ = compose_run("smoke/classification", "ema", 0, str(tmp_path / "runs"))
    result = common.base_result(cfg, "mse", False, "toy", ["a note"])
    done = common.execute(tmp_path / "ok", result, lambda resume_from: (nn.Linear(2, 1), nn.Linear(2, 1)))
    on_disk = json.loads((tmp_path / "ok" / "result.json").read_text())
    assert done["status"] == on_disk["status"] == "completed" and on_disk["notes"] == ["a note"]
    assert (tmp_path / "ok" / "weights" / "average.safetensors").exists()

    def broken(resume_from):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        common.execute(tmp_path / "bad", common.base_result(cfg, "mse", False, "toy", []), broken)
    failed = json.loads((tmp_path / "bad" / "result.json").read_text())
    assert failed["status"] == "failed" and "boom" in failed["error"]


def test_method_and_optimizer_translation(tmp_path):
    cfg, _ = compose_run("smoke/classification", "sema", 0, str(tmp_path / "runs"),
                         ["method.warmup_epochs=0.5", "optim.name=adamw", "optim.lr=0.001"])
    kwargs = common.sema_hook_kwargs(cfg.method, steps_per_epoch=10)
    assert kwargs["method"] == "sema" and kwargs["swap_for_eval"] is False and kwargs["warmup_steps"] == 5
    assert kwargs["switch_every"] == 1 and kwargs["switch_start"] == 1
    wrapper = common.optim_wrapper_cfg(cfg.optim, 10.0)
    assert wrapper["optimizer"]["type"] == "AdamW" and wrapper["optimizer"]["lr"] == 0.001
    assert wrapper["clip_grad"] == {"max_norm": 10.0}
    baseline, _ = compose_run("smoke/classification", "baseline", 0, str(tmp_path / "runs"))
    assert common.sema_hook_kwargs(baseline.method, 10) is None


def test_mmdet_and_mmseg_model_configs_follow_the_task_fields():
    from benchmarks.openmmlab import mmdet_runner, mmseg_runner
    from benchmarks.tasks.detection import Config as DetConfig

    retina = mmdet_runner.model_cfg(DetConfig(fpn_channels=64, anchor_sizes=[16, 32, 64, 128, 256]), 4)
    head = retina["bbox_head"]
    assert head["num_classes"] == 4 and head["in_channels"] == 64
    assert head["anchor_generator"]["octave_base_scale"] * 8 == 16  # the smallest anchor is 16 px at stride 8
    assert retina["neck"]["in_channels"] == [64, 128, 256, 512]
    mask = mmdet_runner.model_cfg(DetConfig(model="maskrcnn_resnet50_fpn", box_batch_size_per_image=128), 80)
    assert mask["backbone"]["depth"] == 50 and mask["roi_head"]["mask_head"]["num_classes"] == 80
    assert mask["rpn_head"]["anchor_generator"]["scales"][0] * 4 == 32
    assert mask["train_cfg"]["rcnn"]["sampler"]["num"] == 128
    fcos = mmdet_runner.model_cfg(DetConfig(model="fcos_resnet18_fpn", fpn_channels=128), 4)
    assert fcos["type"] == "FCOS" and fcos["bbox_head"]["feat_channels"] == 128
    with pytest.raises(ValueError, match="maskrcnn_\\*"):
        mmdet_runner.model_cfg(DetConfig(model="fasterrcnn_resnet18_fpn"), 4)
    with pytest.raises(ValueError, match="ResNet backbones"):
        mmdet_runner.model_cfg(DetConfig(model="maskrcnn_mobilenet_v3_fpn"), 4)

    class SegTask:
        model, input_size = "deeplabv3_resnet18", 96

    seg = mmseg_runner.model_cfg(SegTask, 5)
    assert seg["decode_head"]["type"] == "ASPPHead" and seg["decode_head"]["num_classes"] == 5
    assert seg["data_preprocessor"]["size"] == (96, 96) and seg["backbone"]["depth"] == 18
    with pytest.raises(ValueError, match="fcn_resnet18"):
        mmseg_runner.parse_model("lraspp_mobilenet_v3_large")


def test_missing_openmmlab_package_names_the_install_script():
    with pytest.raises(ModuleNotFoundError, match="install_openmmlab.sh"):
        common.require("surely_not_a_module_sema")
