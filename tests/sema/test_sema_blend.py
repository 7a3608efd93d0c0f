"""Blended switch (method=sema_blend): SEMA's switch_blend moves the model part of the way to the average."""

import copy

import pytest
import torch

import sema
from sema_testing import BNNet, train_steps


def test_hand_computed_half_way_switch():
    lin = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        lin.weight.fill_(2.0)
    avg = sema.SEMA(lin, decay=0.5, switch_blend=0.5)  # average = 2 at binding
    with torch.no_grad():
        lin.weight.fill_(6.0)
    avg.update()  # average = 0.5 * 2 + 0.5 * 6 = 4
    assert avg.epoch_end() is True  # switch: model = 6 + 0.5 * (4 - 6) = 5
    assert lin.weight.item() == 5.0
    assert avg.average.weight.item() == 4.0  # the average is not touched by the switch


def test_matches_naive_loop_over_epochs():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
    ref_model = copy.deepcopy(model)
    avg = sema.SEMA(model, decay=0.8, switch_blend=0.3, switch_start=1, average_dtype=torch.float64)
    ref_avg = {k: v.detach().clone() for k, v in ref_model.named_parameters()}
    opts = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (model, ref_model)]
    for epoch in range(1, 5):
        for _ in range(3):
            x = torch.randn(5, 4, dtype=torch.float64)
            for m, o in zip((model, ref_model), opts):
                o.zero_grad()
                m(x).pow(2).mean().backward()
                o.step()
            avg.update()
            with torch.no_grad():
                for k, p in ref_model.named_parameters():
                    ref_avg[k] = 0.8 * ref_avg[k] + 0.2 * p
        switched = avg.epoch_end()
        assert switched == (epoch > 1)
        if switched:
            with torch.no_grad():
                for k, p in ref_model.named_parameters():
                    p.add_(0.3 * (ref_avg[k] - p))
    for (k, p), (_, q) in zip(model.named_parameters(), ref_model.named_parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(dict(avg.average.named_parameters())[k], ref_avg[k], rtol=1e-12, atol=1e-12)


def test_pull_back_matches_ema_pytorch_update_model_with_ema():
    ema_pytorch = pytest.importorskip("ema_pytorch")
    model = BNNet()
    avg = sema.SEMA(model, decay=0.9, switch_blend=0.75, buffers="ignore")
    train_steps(model, avg, 6)
    theirs_model = copy.deepcopy(model)
    theirs = ema_pytorch.EMA(theirs_model, beta=0.9, update_after_step=0, update_every=1)
    with torch.no_grad():  # same average in both; then ema-pytorch keeps 25% of the model's weights
        for name, p in theirs.ema_model.named_parameters():
            p.copy_(dict(avg.average.named_parameters())[name])
    theirs.update_model_with_ema(0.25)
    avg.switch()
    for (name, mine), (_, other) in zip(model.named_parameters(), theirs_model.named_parameters()):
        torch.testing.assert_close(mine, other, rtol=0, atol=1e-6), name


def test_blend_one_is_plain_sema():
    model = BNNet()
    avg = sema.SEMA(model, decay=0.9)
    train_steps(model, avg, 4)
    avg.epoch_end()
    for k, v in model.state_dict().items():
        assert torch.equal(v, avg.average.state_dict()[k].to(v.dtype)), k
