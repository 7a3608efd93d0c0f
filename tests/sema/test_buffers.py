"""Each buffer policy on a BatchNorm model: what the average holds, and what a switch carries."""

import torch

import sema
from sema_testing import BNNet, train_steps


def _run(policy):
    model = BNNet()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    avg = sema.SEMA(model, decay=0.5, buffers=policy)
    history = []
    train_steps(model, avg, 3, after_step=lambda i: history.append(model.bn.running_mean.clone()))
    return model, avg, initial, history


def test_average_policy_averages_float_buffers_copies_int():
    model, avg, initial, hist = _run("average")
    expected = initial["bn.running_mean"]
    for h in hist:
        expected = 0.5 * expected + 0.5 * h
    torch.testing.assert_close(avg._plan.average.bn.running_mean, expected)
    assert avg._plan.average.bn.num_batches_tracked.item() == 3
    avg.epoch_end()
    torch.testing.assert_close(model.bn.running_mean, expected)  # the switch carries averaged statistics


def test_copy_policy_copies_buffers_each_update():
    model, avg, initial, hist = _run("copy")
    assert torch.equal(avg._plan.average.bn.running_mean, hist[-1])
    assert torch.equal(avg._plan.average.bn.running_var, model.bn.running_var)
    avg.epoch_end()
    assert torch.equal(model.bn.running_mean, hist[-1])


def test_ignore_policy_leaves_buffers_alone():
    model, avg, initial, hist = _run("ignore")
    assert torch.equal(avg._plan.average.bn.running_mean, initial["bn.running_mean"])  # never touched
    live = model.bn.running_mean.clone()
    avg.epoch_end()  # switch: parameters only
    assert torch.equal(model.bn.running_mean, live)
    assert torch.equal(model.fc1.weight, avg.average.fc1.weight)
    # `.average` is evaluated with the model's current statistics under "ignore" (openmixup behaviour)
    assert torch.equal(avg.average.bn.running_mean, live)
    with avg.swapped():
        assert torch.equal(model.bn.running_mean, live)


def test_openmixup_preset_is_ignore_and_mmdet_translates_momentum():
    m = BNNet()
    assert sema.EMA(m, preset="openmixup").buffers == "ignore"
    mm = sema.EMA(m, preset="mmdet", momentum=2e-4)
    assert mm.buffers == "average" and abs(mm.schedule.decay - 0.9998) < 1e-15
    assert mm.schedule.warmup == "mmdet_linear"
    assert sema.EMA(m, preset="mmdet").schedule.decay == 0.9998
    assert sema.EMA(m, preset="openmixup", buffers="average").buffers == "average"  # explicit wins
