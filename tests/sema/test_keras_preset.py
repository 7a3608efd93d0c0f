"""preset="keras": Keras 3's optimizer EMA (`use_ema`, `ema_momentum`, `ema_overwrite_frequency`), against Keras'
own pinned numbers, a hand-computed case, and the method template."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sema
from sema import testing as template


class _Variable(nn.Module):
    """One trainable variable, as Keras' optimizer test uses: backend.Variable([[3.0, 4.0], [5.0, 6.0]])."""

    def __init__(self) -> None:
        super().__init__()
        self.v = nn.Parameter(torch.tensor([[3.0, 4.0], [5.0, 6.0]]))


def _keras_close(actual, expected, atol=1e-6):
    # keras.src.testing.TestCase.assertAllClose defaults: atol=1e-6, rtol=1e-6
    torch.testing.assert_close(actual.detach(), torch.tensor(expected), atol=atol, rtol=1e-6)


def test_keras_optimizer_test_ema_numbers():
    """Keras' keras/src/optimizers/optimizer_test.py, OptimizerTest.test_ema: SGD(learning_rate=1.0, use_ema=True,
    ema_momentum=0.9, ema_overwrite_frequency=3), gradient 1 on every entry, three apply_gradients calls. The
    expected values below are the ones pinned in that test (not computed here)."""
    model = _Variable()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    avg = sema.SEMA(model, preset="keras", decay=0.9, switch_every=3)  # ema_momentum=0.9, ema_overwrite_frequency=3

    def apply_gradients():
        model.v.grad = torch.ones(2, 2)
        opt.step()
        avg.update()

    apply_gradients()
    _keras_close(model.v, [[2.0, 3.0], [4.0, 5.0]])
    _keras_close(avg.average.v, [[2.0, 3.0], [4.0, 5.0]])  # "initialized after first step"
    apply_gradients()
    _keras_close(model.v, [[1.0, 2.0], [3.0, 4.0]])
    _keras_close(avg.average.v, [[1.9, 2.9], [3.9, 4.9]])
    apply_gradients()
    # "Variables were overwritten with EMA"
    _keras_close(model.v, [[1.71, 2.71], [3.71, 4.71]])
    _keras_close(avg.average.v, [[1.71, 2.71], [3.71, 4.71]])
    assert avg.switches == 1


def test_keras_optimizer_test_ema_with_model_fit_numbers():
    """Keras' keras/src/optimizers/optimizer_test.py, OptimizerTest.test_ema_with_model_fit: a Dense(2) layer,
    kernel ones, no bias, mse on x=1, y=0, SGD(learning_rate=0.1, use_ema=True, ema_momentum=0.9) (no overwrite
    frequency), fit for 2 epochs of one batch; fit() ends by writing the average into the model. Keras pins both
    at [[0.891, 0.891]] (atol 1e-5)."""
    model = nn.Linear(1, 2, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    avg = sema.EMA(model, preset="keras", decay=0.9)
    x, y = torch.ones(1, 1), torch.zeros(1, 2)
    for _epoch in range(2):
        opt.zero_grad()
        F.mse_loss(model(x), y).backward()
        opt.step()
        avg.update()
        avg.epoch_end()
    avg.copy_to()  # what fit() does at its end (optimizer.finalize_variable_values)
    _keras_close(avg.average.weight.T, [[0.891, 0.891]], atol=1e-5)
    _keras_close(model.weight.T, [[0.891, 0.891]], atol=1e-5)


class _NetWithBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([3.0], dtype=torch.float64))
        self.bn = nn.BatchNorm1d(1).double()


def test_hand_computed_overwrite_every_two_steps_leaves_buffers_alone():
    """decay 0.5, overwrite frequency 2, an "optimizer" that adds 1 to the weight at every step, weight 3 at
    binding. By hand: step 1 w=4, avg=4 (the first update copies); step 2 w=5, avg=4.5, overwrite: w=4.5;
    step 3 w=5.5, avg=5; step 4 w=6.5, avg=5.75, overwrite: w=5.75; step 5 w=6.75, avg=6.25 (never reset)."""
    model = _NetWithBN()
    avg = sema.SEMA(model, preset="keras", decay=0.5, switch_every=2)
    expected = [(4.0, 4.0), (4.5, 4.5), (5.5, 5.0), (5.75, 5.75), (6.75, 6.25)]  # (model after the step, average)
    for step, (w, a) in enumerate(expected, start=1):
        with torch.no_grad():
            model.w.add_(1.0)
        model.train()
        model.bn(torch.randn(4, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(step)))
        stats = {k: v.clone() for k, v in model.bn.state_dict().items()}
        avg.update()
        assert model.w.item() == w and avg.average.w.item() == a, step
        for k, v in model.bn.state_dict().items():  # buffers: neither averaged nor overwritten
            assert torch.equal(v, stats[k]), (step, k)
            assert torch.equal(avg.average.bn.state_dict()[k].to(v.dtype), v), (step, k)  # evaluated with the model's
    assert avg.switches == 2
    assert set(avg.state_dict()["config"].items()) >= {("buffers", "ignore"), ("switch_unit", "step"),
                                                       ("first_update_copies", True), ("warmup", "none")}


def test_the_first_update_copies_whatever_the_weights_at_binding():
    lin = nn.Linear(3, 1).double()
    avg = sema.EMA(lin, preset="keras", average_dtype=torch.float64)
    with torch.no_grad():
        lin.weight.fill_(7.25)
    avg.update()
    assert torch.equal(avg.average.weight, lin.weight.detach())
    with torch.no_grad():
        lin.weight.fill_(8.25)
    avg.update()  # then avg <- 0.99 * avg + 0.01 * w (Keras' default momentum)
    assert avg.average.weight[0, 0].item() == pytest.approx(0.99 * 7.25 + 0.01 * 8.25, rel=1e-15)


def test_first_update_copies_counts_averaging_updates_and_survives_a_checkpoint():
    lin = nn.Linear(2, 1).double()
    avg = sema.EMA(lin, decay=0.9, update_every=2, first_update_copies=True, average_dtype=torch.float64)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    avg.update()  # skipped by update_every: still the weights at binding
    assert not torch.equal(avg.average.weight, lin.weight.detach())
    resumed = sema.EMA(lin, decay=0.9, update_every=2, first_update_copies=True, average_dtype=torch.float64)
    resumed.load_state_dict(avg.state_dict())
    with torch.no_grad():
        lin.weight.fill_(2.0)
    resumed.update()  # the first averaging update: a copy
    assert torch.equal(resumed.average.weight, lin.weight.detach())


def test_preset_defaults_and_explicit_arguments_win():
    model = nn.Linear(2, 2)
    s = sema.SEMA(model, preset="keras")
    assert (s.schedule.decay, s.buffers, s.first_update_copies, s.cadence.unit) == (0.99, "ignore", True, "step")
    assert s.config()["warmup"] == "none"
    s = sema.SEMA(model, preset="keras", switch_unit="epoch", buffers="average", first_update_copies=False)
    assert (s.cadence.unit, s.buffers, s.first_update_copies) == ("epoch", "average", False)
    for preset in ("paper", "openmixup", "mmdet"):
        s = sema.SEMA(model, preset=preset)
        assert (s.cadence.unit, s.first_update_copies) == ("epoch", False)
    with pytest.raises(ValueError, match=r"first_update_copies='yes' must be True, False or None"):
        sema.EMA(model, first_update_copies="yes")
    with pytest.raises(ValueError, match=r"preset='tf' is not supported; allowed: 'paper', 'openmixup', 'mmdet', 'keras'"):
        sema.SEMA(model, preset="tf")


def test_keras_ema_without_overwrite_never_writes_the_model():
    model = _Variable()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    avg = sema.EMA(model, preset="keras", decay=0.9)
    for _ in range(4):
        model.v.grad = torch.ones(2, 2)
        opt.step()
        avg.update()
        assert not avg.epoch_end()
    assert torch.equal(model.v.detach(), torch.tensor([[-1.0, 0.0], [1.0, 2.0]]))


TEMPLATE_CHECKS = ("check_protocol", "check_round_trip", "check_swapped_restores", "check_copy_to",
                   "check_no_host_sync", "check_declared_passivity", "check_refused_states", "check_reshaped_model")


@pytest.mark.parametrize("check", [getattr(template, name) for name in TEMPLATE_CHECKS], ids=lambda c: c.__name__)
def test_keras_preset_passes_the_method_template(check):
    check(lambda model: sema.SEMA(model, preset="keras", decay=0.9, switch_every=2))
