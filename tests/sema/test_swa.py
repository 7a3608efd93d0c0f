"""SWA against torch.optim.swa_utils.AveragedModel over 50 optimizer steps."""

import pytest
import torch
from torch.optim.swa_utils import AveragedModel

import sema
from sema_testing import BNNet, train_steps


def test_parity_with_averaged_model_50_steps():
    model = BNNet()
    ref = AveragedModel(model)  # default: uniform mean of the parameters, buffers not averaged
    swa = sema.SWA(model, buffers="ignore")
    train_steps(model, swa, 50, after_step=lambda i: ref.update_parameters(model))
    assert swa.n_averaged == 50 == int(ref.n_averaged)
    theirs = dict(ref.module.named_parameters())
    for name, mine in swa.average.named_parameters():
        torch.testing.assert_close(mine, theirs[name], rtol=1e-6, atol=1e-7)


def test_start_step_and_update_every_hand_computed():
    lin = torch.nn.Linear(1, 1, bias=False)
    swa = sema.SWA(lin, start_step=2, update_every=2)
    for call in range(1, 9):  # averaged calls: 4, 6, 8 -> mean(4, 6, 8) = 6
        with torch.no_grad():
            lin.weight.fill_(float(call))
        swa.update()
    assert swa.n_averaged == 3
    assert swa.average.weight.item() == 6.0


def test_swa_buffers_average_uniformly():
    model = BNNet()
    swa = sema.SWA(model)
    means = []
    train_steps(model, swa, 4, after_step=lambda i: means.append(model.bn.running_mean.clone()))
    torch.testing.assert_close(swa.average.bn.running_mean, torch.stack(means).mean(0))
    assert swa.average.bn.num_batches_tracked.item() == 4


def test_start_steps_is_the_documented_name_and_start_step_still_works():
    lin = torch.nn.Linear(1, 1, bias=False)
    assert sema.SWA(lin, start_steps=3).start_steps == 3 == sema.SWA(lin, start_step=3).start_steps
    assert sema.SWA(lin).start_steps == 0 and sema.SWA(lin).config()["start_steps"] == 0
    with pytest.raises(ValueError, match=r"start_steps=3 and start_step=3 were both given"):
        sema.SWA(lin, start_steps=3, start_step=3)
    with pytest.raises(ValueError, match=r"start_steps=-1 must be an integer >= 0"):
        sema.SWA(lin, start_steps=-1)
