"""SEMA switch cadence (hand-written table), switch effect, blend, and the optimizer state left untouched."""

import pytest
import torch

import sema
from sema_testing import BNNet, train_steps

# (switch_every, switch_start) -> the epochs (or steps) among 1..8 that end with a switch, written by hand from
# "n > switch_start and (n - switch_start) % switch_every == 0".
CADENCE = {
    (1, 0): [1, 2, 3, 4, 5, 6, 7, 8],
    (2, 0): [2, 4, 6, 8],
    (3, 0): [3, 6],
    (1, 2): [3, 4, 5, 6, 7, 8],
    (2, 2): [4, 6, 8],
    (3, 2): [5, 8],
}


@pytest.mark.parametrize("every,start", list(CADENCE))
def test_epoch_cadence(every, start):
    model = BNNet()
    avg = sema.SEMA(model, decay=0.9, switch_every=every, switch_start=start)
    switched = []
    for epoch in range(1, 9):
        train_steps(model, avg, 2, seed=epoch)
        if avg.epoch_end():
            switched.append(epoch)
            for k, v in model.state_dict().items():
                assert torch.equal(v, avg.average.state_dict()[k]), k  # the model IS the average now
    assert switched == CADENCE[(every, start)]
    assert avg.switches == len(switched) and avg.epoch == 8


@pytest.mark.parametrize("every,start", list(CADENCE))
def test_step_cadence(every, start):
    model = BNNet()
    avg = sema.SEMA(model, decay=0.9, switch_every=every, switch_start=start, switch_unit="step")
    switched = []
    for step in range(1, 9):
        before = avg.switches
        train_steps(model, avg, 1, seed=step)
        if avg.switches > before:
            switched.append(step)
            assert torch.equal(model.fc1.weight, avg.average.fc1.weight)
        # in step units epoch_end never switches itself; it reports the step switches since the last epoch end
        assert avg.epoch_end() is (avg.switches > before) and avg.switches == len(switched)
    assert switched == CADENCE[(every, start)]


@pytest.mark.parametrize("unit", ["epoch", "step"])
def test_switch_end(unit):
    model = BNNet()
    avg = sema.SEMA(model, switch_every=1, switch_start=0, switch_end=5, switch_unit=unit)
    seen = []
    for n in range(1, 9):
        before = avg.switches
        avg.update()
        avg.epoch_end()
        if avg.switches > before:
            seen.append(n)
    assert seen == [1, 2, 3, 4, 5]


def test_switch_copies_average_and_leaves_optimizer_state():
    model = BNNet()
    avg = sema.SEMA(model, decay=0.9)
    opt = train_steps(model, avg, 5)
    momentum = {id(p): opt.state[p]["momentum_buffer"].clone() for p in model.parameters()}
    expected = {k: v.clone() for k, v in avg.average.state_dict().items()}
    assert avg.epoch_end() is True
    for k, v in model.state_dict().items():
        assert torch.equal(v, expected[k]), k
    for p in model.parameters():
        assert torch.equal(opt.state[p]["momentum_buffer"], momentum[id(p)])


def test_switch_blend_moves_part_of_the_way():
    lin = torch.nn.Linear(2, 2)
    avg = sema.SEMA(lin, decay=0.5, switch_blend=0.25)
    with torch.no_grad():
        lin.weight.fill_(4.0)
        lin.bias.fill_(4.0)
    start_avg = avg.average.weight.detach().clone()
    avg.update()  # avg = 0.5 * start + 2
    a = 0.5 * start_avg + 2.0
    assert avg.epoch_end()
    expected = 4.0 + 0.25 * (a - 4.0)
    assert torch.allclose(lin.weight, expected, atol=1e-6)
    assert torch.allclose(avg.average.weight, a)  # the average itself is unchanged


def test_bf16_switch_equals_rounded_average():
    model = BNNet().bfloat16()
    avg = sema.SEMA(model, decay=0.9)
    train_steps(model, avg, 3)
    avg.epoch_end()
    assert torch.equal(model.fc1.weight, avg.average.fc1.weight.to(torch.bfloat16))


@pytest.mark.parametrize("decay,steps", [(0.9, 10), (0.99, 78), (0.999, 500)])
def test_drift_kept_matches_a_sema_run_on_steadily_drifting_weights(decay, steps):
    from sema.switch import drift_kept

    # One float64 weight that starts at 0 (= the average at binding) and moves by +1 before each of the `steps`
    # updates; SEMA switches right after the last one and writes drift_kept * steps back into the model.
    model = torch.nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        model.weight.zero_()
    avg = sema.SEMA(model, decay=decay, switch_unit="step", switch_every=steps, switch_start=0)
    with torch.no_grad():
        for _ in range(steps):
            model.weight += 1.0
            avg.update()
    assert avg.switches == 1
    assert float(model.weight) / steps == pytest.approx(drift_kept(decay, steps), rel=1e-9)
    assert drift_kept(0.999, 500) == pytest.approx(0.21355, abs=1e-5)  # 1 - 0.999 * (1 - e^-0.50025) / 0.5
    with pytest.raises(ValueError, match="decay"):
        drift_kept(1.0, 10)


def test_step_switches_are_reported_by_the_next_epoch_end_and_counted():
    import torch
    from torch import nn

    import sema

    model = nn.Linear(2, 2)
    avg = sema.SEMA(model, decay=0.5, switch_unit="step", switch_every=4)
    reported = []
    for epoch in range(3):  # 3 steps per epoch: switches after steps 4 and 8 (epochs 2 and 3)
        for _ in range(3):
            with torch.no_grad():
                model.weight.add_(1.0)
            avg.update()
        reported.append(avg.epoch_end())
    assert reported == [False, True, True] and avg.switches == 2
    fresh = sema.SEMA(nn.Linear(2, 2), decay=0.5, switch_unit="step", switch_every=4)
    fresh.load_state_dict(avg.state_dict())
    assert fresh.switches == 2 and fresh.epoch_end() is False  # switches before the checkpoint are not re-reported


def test_no_warm_up_reads_none_and_older_state_dicts_still_load():
    from torch import nn

    import sema

    ema = sema.EMA(nn.Linear(2, 2), decay=0.9)
    assert ema.config()["warmup"] == "none" and "warmup='none'" in repr(ema)
    assert sema.EMA(nn.Linear(2, 2), decay=0.9, warmup_steps=3).config()["warmup"] == "linear"
    state = ema.state_dict()
    state["config"] = {**state["config"], "warmup": "linear"}  # what a state_dict said before
    sema.EMA(nn.Linear(2, 2), decay=0.9).load_state_dict(state)
