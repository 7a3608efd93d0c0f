"""SEMACallback inside a real Lightning Trainer (CPU), with gradient accumulation and checkpoint resume."""

import pytest
import torch
from torch import nn

L = pytest.importorskip("lightning")

from sema.integrations.lightning import SEMACallback  # noqa: E402


class Toy(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.bn = nn.BatchNorm1d(4)
        self.head = nn.Linear(4, 1)
        self.val_swapped = []

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.fc(x)))).squeeze(-1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return ((self(x) - y) ** 2).mean()

    def validation_step(self, batch, batch_idx):
        cb = next(c for c in self.trainer.callbacks if isinstance(c, SEMACallback))
        self.val_swapped.append(cb.averager._plan.is_swapped)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


def _loader(n):
    g = torch.Generator().manual_seed(0)
    ds = torch.utils.data.TensorDataset(torch.randn(n, 3, generator=g), torch.randn(n, generator=g))
    return torch.utils.data.DataLoader(ds, batch_size=4)


def _trainer(tmp_path, cb, epochs):
    return L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, callbacks=[cb], logger=False,
                     enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
                     accumulate_grad_batches=2, num_sanity_val_steps=0, enable_checkpointing=True)


@pytest.mark.slow
def test_lightning_fit_switch_validate_resume(tmp_path):
    torch.manual_seed(0)
    model = Toy()
    cb = SEMACallback(decay=0.8, switch_every=1)
    trainer = _trainer(tmp_path, cb, epochs=2)
    trainer.fit(model, _loader(16), _loader(4))
    avg = cb.averager
    assert (avg.step, avg.epoch, avg.switches) == (4, 2, 2)  # 4 batches/epoch, accumulate 2 -> 2 steps/epoch
    assert model.val_swapped == [True, True]
    for k, v in model.state_dict().items():
        assert torch.equal(v, avg.average.state_dict()[k]), k  # copy_at_end
    ckpt_path = trainer.checkpoint_callback.best_model_path
    cb2 = SEMACallback(decay=0.8, switch_every=1)
    trainer2 = _trainer(tmp_path, cb2, epochs=3)
    trainer2.fit(Toy(), _loader(16), _loader(4), ckpt_path=ckpt_path)
    assert (cb2.averager.step, cb2.averager.epoch, cb2.averager.switches) == (6, 3, 3)


def test_swa_re_estimates_the_average_batchnorm_before_validation(tmp_path):
    """The callback calls the method's prepare_for_eval hook (sema.protocol.PreparesForEval) before validating."""
    torch.manual_seed(0)
    model = Toy()
    cb = SEMACallback(method="swa", bn_update_batches=3)
    trainer = _trainer(tmp_path, cb, epochs=1)
    state = torch.get_rng_state()
    trainer.fit(model, _loader(16), _loader(4))
    assert model.val_swapped == [True]
    # the average's statistics come from exactly 3 training batches (reset, then a cumulative mean)
    assert int(cb.averager.average.bn.num_batches_tracked) == 3
    assert not torch.equal(torch.get_rng_state(), state)  # training drew from the RNG (the check is not vacuous)
