"""SwitchEMAHook inside a real mmengine Runner (tiny BaseModel, tiny dataset, CPU), with resume."""

import pytest
import torch
from torch import nn

mmengine = pytest.importorskip("mmengine")
from mmengine.evaluator import BaseMetric  # noqa: E402
from mmengine.hooks import Hook  # noqa: E402
from mmengine.model import BaseModel  # noqa: E402
from mmengine.registry import HOOKS, METRICS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import sema.integrations.mmengine as sema_mm  # noqa: E402  (registers SwitchEMAHook)


class Toy(BaseModel):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.bn = nn.BatchNorm1d(4)
        self.head = nn.Linear(4, 1)

    def forward(self, inputs, labels, mode="tensor"):
        out = self.head(torch.relu(self.bn(self.fc(inputs)))).squeeze(-1)
        if mode == "loss":
            return {"loss": ((out - labels) ** 2).mean()}
        if mode == "predict":
            return [(o, l) for o, l in zip(out, labels)]
        return out


class Points(torch.utils.data.Dataset):
    def __init__(self, n=12):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(n, 3, generator=g), torch.randn(n, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"inputs": self.x[i], "labels": self.y[i]}


@METRICS.register_module(force=True)
class HookToyMSE(BaseMetric):
    def process(self, data_batch, data_samples):
        self.results += [float((o - l) ** 2) for o, l in data_samples]

    def compute_metrics(self, results):
        return {"mse": sum(results) / len(results)}


@HOOKS.register_module(force=True)
class RecordSwap(Hook):
    priority = "LOW"  # after SwitchEMAHook (NORMAL) in before_val_epoch
    seen: list = []

    def before_val_epoch(self, runner):
        hook = next(h for h in runner.hooks if isinstance(h, sema_mm.SwitchEMAHook))
        RecordSwap.seen.append(hook.averager._plan.is_swapped)


def _runner(work_dir, epochs, resume=False):
    torch.manual_seed(0)  # the same initial weights in every runner
    return Runner(
        model=Toy(), work_dir=str(work_dir),
        train_dataloader=dict(dataset=Points(), sampler=dict(type="DefaultSampler", shuffle=False), batch_size=4,
                              collate_fn=dict(type="default_collate"), num_workers=0),
        val_dataloader=dict(dataset=Points(6), sampler=dict(type="DefaultSampler", shuffle=False), batch_size=6,
                            collate_fn=dict(type="default_collate"), num_workers=0),
        val_cfg=dict(), val_evaluator=dict(type="HookToyMSE"),
        optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.05, momentum=0.9)),
        train_cfg=dict(by_epoch=True, max_epochs=epochs, val_interval=1),
        custom_hooks=[dict(type="SwitchEMAHook", decay=0.8, switch_every=2), dict(type="RecordSwap")],
        default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=1), logger=dict(type="LoggerHook")),
        resume=resume, randomness=dict(seed=0), env_cfg=dict(dist_cfg=dict(backend="gloo")),
        visualizer=dict(type="Visualizer", vis_backends=[]),
    )


@pytest.mark.slow
def test_runner_trains_switches_validates_and_resumes(tmp_path, monkeypatch):
    RecordSwap.seen = []
    runner = _runner(tmp_path / "a", epochs=4)
    runner.train()
    hook = next(h for h in runner.hooks if isinstance(h, sema_mm.SwitchEMAHook))
    avg = hook.averager
    assert (avg.step, avg.epoch, avg.switches) == (12, 4, 2)  # 3 iters/epoch; switches after epochs 2 and 4
    assert RecordSwap.seen == [True] * 4  # every validation epoch ran on the average
    assert not avg._plan.is_swapped
    ckpt = torch.load(tmp_path / "a" / "epoch_2.pth", weights_only=False)
    assert ckpt["sema"]["step"] == 6 and ckpt["sema"]["switches"] == 1

    # resume from the last checkpoint in a fresh runner (mmengine 0.10 resumes with a plain torch.load, which
    # torch >= 2.6 makes weights_only; its checkpoints hold Python objects, so allow full unpickling here)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    resumed = _runner(tmp_path / "a", epochs=5, resume=True)  # resumes after epoch 4, trains epoch 5
    resumed.train()
    hook2 = next(h for h in resumed.hooks if isinstance(h, sema_mm.SwitchEMAHook))
    assert (hook2.averager.step, hook2.averager.epoch, hook2.averager.switches) == (15, 5, 2)
    straight = _runner(tmp_path / "b", epochs=5)
    straight.train()
    avg = next(h for h in straight.hooks if isinstance(h, sema_mm.SwitchEMAHook)).averager
    for k, v in avg.average.state_dict().items():
        torch.testing.assert_close(hook2.averager.average.state_dict()[k], v, rtol=0, atol=0)
