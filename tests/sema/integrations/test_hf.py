"""SEMACallback inside a real transformers Trainer with a tiny GPT-2 (CPU, no network)."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from sema.integrations.hf import STATE_FILE, SEMACallback  # noqa: E402


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


def test_swa_re_estimates_the_average_batchnorm_before_evaluation(tmp_path):
    """The callback calls the method's prepare_for_eval hook (sema.protocol.PreparesForEval) before evaluating."""
    torch.manual_seed(0)
    model = BNRegressor()
    cb = SEMACallback(method="swa", bn_update_batches=2, copy_at_end=False)
    args = training_args(tmp_path, num_train_epochs=1, save_strategy="no")
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Points(), eval_dataset=Points(8),
                                   callbacks=[cb])
    trainer.train()
    assert cb.averager.n_averaged == 4  # 16 samples / 4 per step
    assert int(cb.averager.average.bn.num_batches_tracked) == 2  # re-estimated from exactly 2 training batches
    assert int(model.bn.num_batches_tracked) == 4  # the model's own statistics are its training's
