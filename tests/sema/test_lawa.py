"""LAWA: the mean of the latest k snapshots, against a naive list of snapshots; cadences; buffers."""

import pytest
import torch

import sema
from sema_testing import BNNet, train_steps


def _set(lin, value):
    with torch.no_grad():
        lin.weight.fill_(value)


def test_hand_computed_mean_of_latest_two():
    lin = torch.nn.Linear(1, 1, bias=False)
    avg = sema.LAWA(lin, k=2, unit="step")
    _set(lin, 7.0)
    assert avg.average.weight.item() == 7.0  # no snapshot yet: the model's own weights
    for v in (1.0, 2.0, 4.0):
        _set(lin, v)
        avg.update()
    assert avg.snapshots == 3
    assert avg.average.weight.item() == 3.0  # (2 + 4) / 2: the snapshot 1 fell out of the window


@pytest.mark.parametrize("k,every,start", [(3, 2, 1), (1, 1, 0), (4, 3, 5)])
def test_matches_naive_list_of_snapshots_every_step(k, every, start):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    avg = sema.LAWA(model, k=k, every=every, start=start, unit="step")
    snapshots = []
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for n in range(1, 25):
        opt.zero_grad()
        model(torch.randn(5, 3)).pow(2).mean().backward()
        opt.step()
        avg.update()
        if n > start and (n - start) % every == 0:
            snapshots.append({k_: v.detach().clone() for k_, v in model.named_parameters()})
        for name, mine in avg.average.named_parameters():
            if not snapshots:
                expected = dict(model.named_parameters())[name].detach()
            else:
                window = [s[name] for s in snapshots[-k:]]
                expected = sum(window[1:], window[0]) / len(window) if len(window) > 1 else window[0]
            assert torch.equal(mine, expected), (n, name)  # same additions, oldest first: bit for bit


def test_epoch_unit_snapshots_at_epoch_ends():
    lin = torch.nn.Linear(1, 1, bias=False)
    avg = sema.LAWA(lin, k=2, every=1, start=1)  # Kaddour: one snapshot per epoch; first after epoch 2
    values = {1: 10.0, 2: 2.0, 3: 4.0, 4: 8.0}
    for epoch, v in values.items():
        for _ in range(3):  # steps inside an epoch never snapshot with unit="epoch"
            _set(lin, v + 100.0)
            avg.update()
        _set(lin, v)
        assert avg.epoch_end() is False
    assert avg.snapshots == 3  # epochs 2, 3, 4
    assert avg.average.weight.item() == 6.0  # (4 + 8) / 2


def test_buffers_floating_averaged_integer_newest():
    model = BNNet()
    avg = sema.LAWA(model, k=3, unit="step")
    seen = []
    train_steps(model, avg, 5, after_step=lambda i: seen.append(
        {k: v.detach().clone() for k, v in model.state_dict().items()}))
    got = avg.average.state_dict()
    for name in ("bn.running_mean", "bn.running_var", "fc1.weight"):
        window = [s[name] for s in seen[-3:]]
        torch.testing.assert_close(got[name], (window[0] + window[1] + window[2]) / 3, rtol=1e-6, atol=1e-7)
    assert got["bn.num_batches_tracked"].item() == 5


def test_memory_is_k_snapshots_plus_average():
    model = torch.nn.Linear(10, 10)
    avg = sema.LAWA(model, k=4)
    assert len(avg._slots) == 4
    assert avg.state_dict()["queue"] == []  # nothing to save before the first snapshot


@pytest.mark.parametrize("kwargs,message", [
    (dict(k=0), r"k=0 must be an integer >= 1"),
    (dict(every=0), r"every=0 must be an integer >= 1"),
    (dict(start=-1), r"start=-1 must be an integer >= 0"),
    (dict(unit="iter"), r"unit='iter' is not supported; allowed: 'epoch', 'step'"),
    (dict(k=2.5), r"k=2.5 must be an integer >= 1"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sema.LAWA(torch.nn.Linear(1, 1), **kwargs)


def test_load_rejects_wrong_queue():
    lin = torch.nn.Linear(2, 1)
    avg = sema.LAWA(lin, k=2, unit="step")
    avg.update()
    sd = avg.state_dict()
    sd["snapshots"] = 5
    with pytest.raises(ValueError, match="holds 1 snapshots but says 5 were taken with k=2; expected 2"):
        sema.LAWA(lin, k=2, unit="step").load_state_dict(sd)
    sd = avg.state_dict()
    sd["queue"] = [{"weight": torch.zeros(1, 2)}]
    with pytest.raises(ValueError, match=r"missing \['bias'\]"):
        sema.LAWA(lin, k=2, unit="step").load_state_dict(sd)
