"""state_dict: round trip mid-training continues bit for bit; every mismatch is named."""

import copy
import io

import pytest
import torch

import sema
from sema_testing import BNNet


def _save_load(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("method,kwargs", [
    ("ema", dict(decay=0.9, warmup_steps=5)),
    ("sema", dict(decay=0.9, warmup_steps=5, switch_every=2, switch_unit="step")),
    ("swa", dict(start_step=2)),
])
def test_round_trip_mid_training_is_bit_for_bit(method, kwargs):
    torch.manual_seed(0)
    model_a = BNNet()
    model_b = copy.deepcopy(model_a)
    # run A: 10 steps straight through
    avg_a = sema.METHODS[method](model_a, **kwargs)
    opt_a = torch.optim.SGD(model_a.parameters(), lr=0.1, momentum=0.9)
    # run B: 4 steps, checkpoint (model, optimizer, averager), fresh objects, 6 more steps
    avg_b = sema.METHODS[method](model_b, **kwargs)
    opt_b = torch.optim.SGD(model_b.parameters(), lr=0.1, momentum=0.9)

    def steps(model, opt, avg, lo, hi):
        for i in range(lo, hi):
            x = torch.randn(6, 4, generator=torch.Generator().manual_seed(i))
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
            avg.update()
            if i % 3 == 2:
                avg.epoch_end()

    steps(model_a, opt_a, avg_a, 0, 10)
    steps(model_b, opt_b, avg_b, 0, 4)
    ckpt = _save_load({"model": model_b.state_dict(), "opt": opt_b.state_dict(), "avg": avg_b.state_dict()})
    model_c = BNNet()
    model_c.load_state_dict(ckpt["model"])
    opt_c = torch.optim.SGD(model_c.parameters(), lr=0.1, momentum=0.9)
    opt_c.load_state_dict(ckpt["opt"])
    avg_c = sema.METHODS[method](model_c, **kwargs)
    avg_c.load_state_dict(ckpt["avg"])
    assert (avg_c.step, avg_c.epoch) == (4, 1)
    steps(model_c, opt_c, avg_c, 4, 10)
    for k, v in avg_a.average.state_dict().items():
        assert torch.equal(v, avg_c.average.state_dict()[k]), k
    for k, v in model_a.state_dict().items():
        assert torch.equal(v, model_c.state_dict()[k]), k
    assert avg_a.state_dict()["config"] == avg_c.state_dict()["config"]


def test_state_dict_layout():
    sd = sema.SEMA(BNNet(), decay=0.99).state_dict()
    assert sd["format"] == "sema" and sd["version"] == 1 and sd["method"] == "SEMA"
    assert {"step", "epoch", "updates", "switches", "config", "average"} <= set(sd)
    assert set(sd["average"]) == set(BNNet().state_dict())


def test_mismatches_are_named():
    avg = sema.EMA(BNNet(), decay=0.99)
    sd = avg.state_dict()
    bad = copy.deepcopy(sd)
    bad["version"] = 99
    with pytest.raises(ValueError, match="state_dict format version 99 is not supported; this sema reads version 1"):
        avg.load_state_dict(bad)
    with pytest.raises(ValueError, match="saved by method 'EMA'; this object is 'SEMA'"):
        sema.SEMA(BNNet(), decay=0.99).load_state_dict(sd)
    with pytest.raises(ValueError, match="not a sema state_dict"):
        avg.load_state_dict({"weights": 1})
    with pytest.raises(ValueError, match=r"decay: saved 0.99, current 0.9"):
        sema.EMA(BNNet(), decay=0.9).load_state_dict(sd)
    sema.EMA(BNNet(), decay=0.9).load_state_dict(sd, strict=False)
    wrong = copy.deepcopy(sd)
    del wrong["average"]["fc2.bias"]
    wrong["average"]["extra.w"] = torch.zeros(1)
    wrong["average"]["fc1.weight"] = torch.zeros(16, 4)
    with pytest.raises(ValueError) as err:
        avg.load_state_dict(wrong)
    msg = str(err.value)
    assert "missing from the saved state: ['fc2.bias']" in msg
    assert "unexpected in the saved state: ['extra.w']" in msg
    assert "fc1.weight: expected (8, 4), got (16, 4)" in msg


def test_a_state_dict_saved_before_first_update_copies_loads():
    sd = sema.SEMA(BNNet(), decay=0.99).state_dict()
    sd["config"] = {k: v for k, v in sd["config"].items() if k != "first_update_copies"}
    sema.SEMA(BNNet(), decay=0.99).load_state_dict(sd)
    with pytest.raises(ValueError, match=r"first_update_copies: saved False, current True"):
        sema.SEMA(BNNet(), decay=0.99, first_update_copies=True).load_state_dict(sd)


def test_missing_entries_and_bad_counters_are_named():
    avg = sema.SEMA(BNNet(), decay=0.99)
    sd = avg.state_dict()
    with pytest.raises(ValueError) as err:
        avg.load_state_dict({k: v for k, v in sd.items() if k not in ("average", "step")})
    assert str(err.value) == (
        "SEMA state_dict is missing ['step', 'average']: a valid one (from SEMA.state_dict()) has the keys "
        "['format', 'version', 'method', 'config', 'step', 'epoch', 'updates', 'switches', 'average']")
    with pytest.raises(ValueError, match=r"state_dict\['updates'\]=-1 is not a counter: expected an integer >= 0"):
        avg.load_state_dict({**sd, "updates": -1})
    with pytest.raises(ValueError, match=r"the saved average holds non-tensor values under \['fc1.weight'\]"):
        avg.load_state_dict({**sd, "average": {**sd["average"], "fc1.weight": [0.0]}})


def test_non_finite_average_is_refused_by_name_and_nothing_is_loaded():
    avg = sema.EMA(BNNet(), decay=0.9)
    sd = copy.deepcopy(avg.state_dict())
    sd["step"] = 5
    sd["average"]["fc2.bias"][1] = float("nan")
    sd["average"]["fc1.weight"][0, 0] = float("-inf")
    target = sema.EMA(BNNet(), decay=0.9)
    before = copy.deepcopy(target.state_dict())
    with pytest.raises(ValueError) as err:
        target.load_state_dict(sd)
    assert str(err.value).startswith(
        "the saved average holds non-finite values in fc1.weight (0 NaN, 1 inf of 32 values), fc2.bias (1 NaN, "
        "0 inf of 3 values): refusing to load a diverged average")
    assert target.step == 0
    for k, v in target.state_dict()["average"].items():
        assert torch.equal(v, before["average"][k]), k


def test_copied_buffers_may_hold_inf():
    """Only averaged tensors are checked: a buffer taken over as it is (buffers="copy") is the model's own value."""
    model = BNNet()
    model.bn.running_var[0] = float("inf")
    avg = sema.EMA(model, decay=0.9, buffers="copy")
    sema.EMA(model, decay=0.9, buffers="copy").load_state_dict(avg.state_dict())
