"""SEMACallback inside a real Lightning Trainer (CPU), with gradient accumulation and checkpoint resume."""

import pytest
import torch
from torch import nn

L = pytest.importorskip("lightning")

from sema.integrations.lightning import SEMACallback  # noqa: E402
from sema_testing import assert_same_state, state_copy  # noqa: E402


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
        self.val_swapped.append(cb.averager is not None and cb.averager._plan.is_swapped)
        x, y = batch
        self.log("loss", ((self(x) - y) ** 2).mean())

    test_step = validation_step

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


# -- checkpoints hold what was evaluated; standalone validate()/test() swap; resume is bit for bit


def _loss(module, loader):
    """The logged validation loss by hand (the loader is one batch)."""
    (x, y), = list(loader)
    was_training = module.training
    module.eval()
    with torch.no_grad():
        loss = ((module(x) - y) ** 2).mean().item()
    module.train(was_training)
    return loss


def _fit(root, epochs, ckpt_path=None):
    torch.manual_seed(0)
    model = Toy()
    cb = SEMACallback(method="ema", decay=0.5, copy_at_end=False)
    trainer = _trainer(root, cb, epochs)
    trainer.fit(model, _loader(16), _loader(4), ckpt_path=ckpt_path)
    return model, cb, trainer


def test_checkpoint_holds_the_evaluated_average_and_resumes_bit_for_bit(tmp_path):
    model, cb, trainer = _fit(tmp_path / "a", epochs=3)
    first, first_cb, first_trainer = _fit(tmp_path / "b", epochs=2)
    path = first_trainer.checkpoint_callback.best_model_path  # written after epoch 2's validation
    saved = torch.load(path, weights_only=False)
    assert_same_state(saved["state_dict"], state_copy(first_cb.averager.average))  # the model is the average
    assert_same_state(saved["callbacks"]["SEMACallback"]["online"], state_copy(first))  # the online weights beside it
    assert not torch.equal(saved["state_dict"]["fc.weight"], first.fc.weight)
    assert_same_state(state_copy(Toy.load_from_checkpoint(path)), state_copy(first_cb.averager.average))

    resumed, resumed_cb, _ = _fit(tmp_path / "b", epochs=3, ckpt_path=path)
    assert (resumed_cb.averager.step, resumed_cb.averager.epoch) == (6, 3)
    assert_same_state(state_copy(resumed), state_copy(model))  # the module's own weights, bit for bit
    assert_same_state(state_copy(resumed_cb.averager.average), state_copy(cb.averager.average))


def test_standalone_validate_and_test_evaluate_the_average(tmp_path):
    model, cb, trainer = _fit(tmp_path, epochs=1)
    online = state_copy(model)
    average_loss, online_loss = _loss(cb.averager.average, _loader(4)), _loss(model, _loader(4))
    assert average_loss != pytest.approx(online_loss, rel=1e-3)
    model.val_swapped.clear()
    assert trainer.validate(model, _loader(4))[0]["loss"] == pytest.approx(average_loss, rel=1e-6)
    assert trainer.test(model, _loader(4))[0]["loss"] == pytest.approx(average_loss, rel=1e-6)
    assert model.val_swapped == [True, True]
    assert_same_state(state_copy(model), online)

    # a fresh Trainer and callback: the module as it is, or the checkpoint's average with ckpt_path
    path = trainer.checkpoint_callback.best_model_path
    fresh = _trainer(tmp_path / "fresh", SEMACallback(method="ema", decay=0.5), epochs=1)
    assert fresh.validate(model, _loader(4))[0]["loss"] == pytest.approx(online_loss, rel=1e-6)
    fresh = _trainer(tmp_path / "fresh", SEMACallback(method="ema", decay=0.5), epochs=1)
    other = Toy()
    assert fresh.test(other, _loader(4), ckpt_path=path)[0]["loss"] == pytest.approx(average_loss, rel=1e-6)
    assert other.val_swapped == [True]


class SavesDuringValidation(Toy):
    """Saves a checkpoint from inside validation (while the average is swapped in), as a user's
    on_validation_epoch_end or a best-checkpoint logic might."""

    def on_validation_epoch_end(self):
        self.trainer.save_checkpoint(self.trainer.default_root_dir + f"/in_validation_{self.current_epoch}.ckpt")


def test_a_checkpoint_saved_during_validation_holds_the_average_and_the_online_weights(tmp_path):
    torch.manual_seed(0)
    model = SavesDuringValidation()
    cb = SEMACallback(method="ema", decay=0.5, copy_at_end=False)
    trainer = _trainer(tmp_path, cb, epochs=1)
    online_seen = {}

    class Probe(L.Callback):  # the weights right before validation: what the checkpoint must call "online"
        def on_validation_start(self, trainer, pl_module):
            online_seen.update(state_copy(pl_module))

    trainer.callbacks.insert(0, Probe())
    trainer.fit(model, _loader(16), _loader(4))  # before the fix: "cannot read the average inside swapped()"
    saved = torch.load(tmp_path / "in_validation_0.ckpt", weights_only=True)
    assert_same_state(saved["state_dict"], state_copy(cb.averager.average))  # what validation evaluated
    online = next(v["online"] for k, v in saved["callbacks"].items() if "SEMACallback" in k)
    assert_same_state(online, online_seen)
    assert not cb.averager._plan.is_swapped and cb.averager.step == 2
