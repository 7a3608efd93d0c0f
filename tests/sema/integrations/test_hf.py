"""SEMACallback inside a real transformers Trainer with a tiny GPT-2 and a tiny regressor (CPU, no network)."""

import shutil

import pytest
import torch

transformers = pytest.importorskip("transformers")

from safetensors.torch import load_file as safetensors_load  # noqa: E402

from sema.integrations.hf import ONLINE_FILE, STATE_FILE, SEMACallback  # noqa: E402
from sema_testing import assert_same_state, state_copy  # noqa: E402


class Tokens(torch.utils.data.Dataset):
    def __init__(self, n=16, length=8, vocab=32):
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, vocab, (n, length), generator=g)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def training_args(tmp_path, **overrides):
    """CPU, no reporting, batch 4, evaluation every epoch."""
    return transformers.TrainingArguments(**{
        "output_dir": str(tmp_path), "use_cpu": True, "report_to": [], "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 8, "eval_strategy": "epoch", "logging_strategy": "no",
        "learning_rate": 1e-2, "seed": 0, "disable_tqdm": True, "dataloader_num_workers": 0, **overrides})


@pytest.mark.slow
def test_trainer_runs_sema_and_evaluates_the_average(tmp_path):
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=32, n_positions=16, n_embd=16, n_layer=1, n_head=2)
    model = transformers.GPT2LMHeadModel(config)
    cb = SEMACallback(decay=0.9, switch_every=1)
    seen = []

    args = training_args(tmp_path, num_train_epochs=2, save_strategy="epoch")
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Tokens(), eval_dataset=Tokens(8),
                                   callbacks=[cb])
    original_evaluate = trainer.evaluation_loop

    def spy(*a, **k):  # record whether the model held the average while the Trainer evaluated
        seen.append(torch.equal(model.transformer.wte.weight, cb.averager._plan.groups[0].model[0])
                    and cb.averager._plan.is_swapped)
        return original_evaluate(*a, **k)

    trainer.evaluation_loop = spy
    trainer.train()
    avg = cb.averager
    assert avg.step == 8 and avg.epoch == 2 and avg.switches == 2  # 16 samples / 4 per step * 2 epochs
    assert seen == [True, True]  # evaluated inside swapped(), twice
    assert not avg._plan.is_swapped
    for k, v in model.state_dict().items():  # copy_at_end: the trained model is the average
        assert torch.equal(v, avg.average.state_dict()[k]), k
    saved = torch.load(tmp_path / "checkpoint-8" / STATE_FILE, weights_only=True)
    assert saved["method"] == "SEMA" and saved["step"] == 8


class BNRegressor(torch.nn.Module):
    """A tiny model with BatchNorm that the Trainer can train: forward(x, labels) -> {"loss", "logits"}."""

    def __init__(self):
        super().__init__()
        self.fc, self.bn, self.head = torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 1)

    def forward(self, x, labels=None):
        out = self.head(torch.relu(self.bn(self.fc(x)))).squeeze(-1)
        return {"loss": ((out - labels) ** 2).mean(), "logits": out}


class Points(torch.utils.data.Dataset):
    def __init__(self, n=16):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(n, 3, generator=g), torch.randn(n, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}


def points_trainer(model, args, callback):
    """A Trainer on 16 training and 8 evaluation Points with `callback`."""
    return transformers.Trainer(model=model, args=args, train_dataset=Points(), eval_dataset=Points(8),
                                callbacks=[callback])


def test_swa_re_estimates_the_average_batchnorm_before_evaluation(tmp_path):
    """The callback calls the method's prepare_for_eval hook (sema.protocol.PreparesForEval) before evaluating."""
    torch.manual_seed(0)
    model = BNRegressor()
    cb = SEMACallback(method="swa", bn_update_batches=2, copy_at_end=False)
    args = training_args(tmp_path, num_train_epochs=1, save_strategy="no")
    trainer = points_trainer(model, args, cb)
    trainer.train()
    assert cb.averager.n_averaged == 4  # 16 samples / 4 per step
    assert int(cb.averager.average.bn.num_batches_tracked) == 2  # re-estimated from exactly 2 training batches
    assert int(model.bn.num_batches_tracked) == 4  # the model's own statistics are its training's


# -- checkpoints hold what was evaluated; standalone evaluate() swaps; resume is bit for bit


class Probe(transformers.TrainerCallback):
    """Records, at every checkpoint, the average the SEMACallback held and the model's own weights."""

    def __init__(self, cb):
        self.cb, self.average, self.online = cb, {}, {}

    def on_save(self, args, state, control, model=None, **kwargs):
        self.average[state.global_step] = state_copy(self.cb.averager.average)
        self.online[state.global_step] = state_copy(model)


def _loss(module, data):
    """The Trainer's eval loss, computed by hand (one batch: the eval set has per_device_eval_batch_size rows)."""
    was_training = module.training
    module.eval()
    with torch.no_grad():
        loss = module(x=data.x, labels=data.y)["loss"].item()
    module.train(was_training)
    return loss


def test_load_best_model_at_end_gives_the_evaluated_average(tmp_path):
    torch.manual_seed(0)
    model = BNRegressor()
    cb = SEMACallback(method="ema", decay=0.5)
    probe = Probe(cb)
    args = training_args(tmp_path, num_train_epochs=3, save_strategy="epoch", load_best_model_at_end=True,
                         metric_for_best_model="eval_loss")
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Points(), eval_dataset=Points(8),
                                   callbacks=[cb, probe])
    trainer.train()
    evals = {e["step"]: e["eval_loss"] for e in trainer.state.log_history if "eval_loss" in e}
    best_step = min(evals, key=evals.get)
    assert sorted(evals) == [4, 8, 12] and best_step != 12  # the best is not the last: the test can tell
    best = tmp_path / f"checkpoint-{best_step}"
    assert trainer.state.best_model_checkpoint == str(best)
    for step in evals:  # every checkpoint: the model file is the average, the online weights beside it
        folder = tmp_path / f"checkpoint-{step}"
        assert_same_state(safetensors_load(folder / "model.safetensors"), probe.average[step])
        assert_same_state(torch.load(folder / ONLINE_FILE, weights_only=True), probe.online[step])
        assert not torch.equal(probe.average[step]["fc.weight"], probe.online[step]["fc.weight"])
    assert_same_state(state_copy(model), probe.average[best_step])  # loaded, and not overwritten by copy_at_end
    assert_same_state(state_copy(cb.averager.average), probe.average[best_step])  # the best checkpoint's averager
    assert trainer.state.best_metric == evals[best_step] == pytest.approx(_loss(model, Points(8)), rel=1e-6)
    assert trainer.evaluate()["eval_loss"] == trainer.state.best_metric  # re-evaluated: the same weights
    assert_same_state(state_copy(model), probe.average[best_step])


def test_resume_from_checkpoint_continues_bit_for_bit(tmp_path):
    def run(output_dir, resume=None):
        torch.manual_seed(0)
        model = BNRegressor()
        cb = SEMACallback(decay=0.5, switch_every=2, copy_at_end=False)  # switches after epoch 2 only
        args = training_args(output_dir, num_train_epochs=3, save_strategy="epoch")
        trainer = points_trainer(model, args, cb)
        trainer.train(resume_from_checkpoint=resume)
        return model, cb.averager

    model, avg = run(tmp_path / "a")
    saved = tmp_path / "a" / "checkpoint-4"  # after epoch 1: the online weights are not the average
    assert not torch.equal(safetensors_load(saved / "model.safetensors")["fc.weight"],
                           torch.load(saved / ONLINE_FILE, weights_only=True)["fc.weight"])
    shutil.copytree(saved, tmp_path / "b" / "checkpoint-4")
    resumed, resumed_avg = run(tmp_path / "b", resume=True)  # the last checkpoint in b: checkpoint-4
    assert (resumed_avg.step, resumed_avg.epoch, resumed_avg.switches) == (12, 3, 1)
    assert not torch.equal(model.fc.weight, avg.average.fc.weight)  # no switch after epoch 3: they differ
    assert_same_state(state_copy(resumed), state_copy(model))
    assert_same_state(state_copy(resumed_avg.average), state_copy(avg.average))

    # A checkpoint interrupted after the Trainer's files but before the callback's: its model file holds the
    # average, so resuming from it would silently train on from the average; it is refused, naming what lacks.
    (tmp_path / "c").mkdir()
    shutil.copytree(saved, tmp_path / "c" / "checkpoint-4")
    (tmp_path / "c" / "checkpoint-4" / ONLINE_FILE).unlink()
    with pytest.raises(RuntimeError, match=f"checkpoint-4 lacks {ONLINE_FILE} .*resume from the previous"):
        run(tmp_path / "c", resume=True)


def test_standalone_evaluate_evaluates_the_average(tmp_path):
    torch.manual_seed(0)
    model = BNRegressor()
    cb = SEMACallback(method="ema", decay=0.5, copy_at_end=False)
    args = training_args(tmp_path, num_train_epochs=1, save_strategy="epoch")
    trainer = points_trainer(model, args, cb)
    trainer.train()
    online = state_copy(model)
    average_loss, online_loss = _loss(cb.averager.average, Points(8)), _loss(model, Points(8))
    assert average_loss != pytest.approx(online_loss, rel=1e-3)
    assert trainer.evaluate()["eval_loss"] == pytest.approx(average_loss, rel=1e-6)
    both = trainer.evaluate(eval_dataset={"a": Points(8), "b": Points(8)})  # evaluate() calls itself per set
    assert both["eval_a_loss"] == both["eval_b_loss"] == pytest.approx(average_loss, rel=1e-6)
    assert_same_state(state_copy(model), online)  # the model's own weights are back, bit for bit

    # a fresh Trainer: the online model on its own, the average once the callback has one (load_averager)
    fresh = SEMACallback(method="ema", decay=0.5)
    trainer = transformers.Trainer(model=model, args=training_args(tmp_path / "fresh"), eval_dataset=Points(8),
                                   callbacks=[fresh])
    assert trainer.evaluate()["eval_loss"] == pytest.approx(online_loss, rel=1e-6)  # no averager yet
    fresh.load_averager(tmp_path / "checkpoint-4")
    assert trainer.evaluate()["eval_loss"] == pytest.approx(average_loss, rel=1e-6)
    assert_same_state(state_copy(model), online)


def test_a_callback_added_later_attaches_when_training_starts(tmp_path):
    torch.manual_seed(0)
    model = BNRegressor()
    trainer = transformers.Trainer(model=model, args=training_args(tmp_path, num_train_epochs=1),
                                   train_dataset=Points(), eval_dataset=Points(8))
    cb = SEMACallback(method="ema", decay=0.5, copy_at_end=False)
    trainer.add_callback(cb)
    trainer.train()
    assert cb._trainer is trainer and "evaluate" in vars(trainer)  # wrapped on the instance, not the class
    assert_same_state(safetensors_load(tmp_path / "checkpoint-4" / "model.safetensors"), state_copy(cb.averager.average))

    late = transformers.Trainer(model=BNRegressor(), args=training_args(tmp_path / "late", num_train_epochs=2),
                                train_dataset=Points(), eval_dataset=Points(8))
    late.add_callback(SEMACallback(method="ema", decay=0.5))
    with pytest.raises(RuntimeError, match="cannot tell which checkpoint"):
        late.train(resume_from_checkpoint=str(tmp_path / "checkpoint-4"))
