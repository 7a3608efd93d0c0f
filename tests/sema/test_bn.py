"""sema.bn.update_bn against torch.optim.swa_utils.update_bn, and with a custom forward_fn."""

import copy

import pytest
import torch
from torch.optim.swa_utils import update_bn as torch_update_bn

import sema
from sema.bn import update_bn
from sema_testing import BNNet, train_steps


def test_parity_with_swa_utils():
    model = BNNet()
    swa = sema.SWA(model)
    train_steps(model, swa, 5)
    batches = [(torch.randn(7, 4), torch.zeros(7)) for _ in range(4)]
    ours, theirs = copy.deepcopy(swa.average), copy.deepcopy(swa.average)
    assert update_bn(batches, ours) == 4
    torch_update_bn(batches, theirs)
    for k, v in theirs.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[k], v, rtol=0, atol=0)
    assert not ours.training and ours.bn.momentum == 0.1


def test_forward_fn_and_max_batches():
    model = BNNet()
    data = [{"x": torch.full((3, 4), float(i))} for i in range(5)]
    used = update_bn(data, model, forward_fn=lambda m, b: m(b["x"]), max_batches=2)
    assert used == 2 and model.bn.num_batches_tracked.item() == 2
    ref = BNNet()
    ref.load_state_dict(model.state_dict())
    torch_update_bn([d["x"] for d in data[:2]], ref)
    torch.testing.assert_close(model.bn.running_mean, ref.bn.running_mean)
    with pytest.raises(ValueError, match="max_batches=0"):
        update_bn(data, model, max_batches=0)
    assert update_bn(data, torch.nn.Linear(4, 4)) == 0


@pytest.mark.parametrize("method", ["EMA", "SEMA", "SWA"])
def test_prepare_for_eval_recomputes_the_average_statistics_like_torch_on_the_averaged_weights(method):
    """bn_update_batches (SWA's, and EMA/SEMA's for the BatchNorm study): the average's statistics become
    torch's update_bn over the first k batches on the averaged weights; the model's own state is untouched."""
    torch.manual_seed(0)
    model = BNNet()
    avg = getattr(sema, method)(model, bn_update_batches=2)
    train_steps(model, avg, 5)
    batches = [(torch.randn(7, 4), torch.zeros(7)) for _ in range(4)]
    expected = copy.deepcopy(avg.average)
    torch_update_bn([x for x, _ in batches[:2]], expected)
    own = copy.deepcopy(model.state_dict())
    avg.prepare_for_eval(batches, lambda batch: model(batch[0]))
    for k, v in expected.state_dict().items():
        torch.testing.assert_close(avg.average.state_dict()[k], v, rtol=0, atol=0)
    for k, v in own.items():
        assert torch.equal(model.state_dict()[k], v), k
    with pytest.raises(ValueError, match="bn_update_batches needs buffers='average' or 'copy'"):
        getattr(sema, method)(BNNet(), bn_update_batches=2, buffers="ignore")


def test_without_bn_update_batches_prepare_for_eval_changes_nothing():
    model = BNNet()
    avg = sema.EMA(model)
    train_steps(model, avg, 3)
    before = copy.deepcopy(avg.average.state_dict())
    avg.prepare_for_eval([(torch.randn(7, 4), torch.zeros(7))], lambda batch: model(batch[0]))
    assert all(torch.equal(avg.average.state_dict()[k], v) for k, v in before.items())
