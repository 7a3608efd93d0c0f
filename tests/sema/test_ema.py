"""EMA: hand-computed updates, parity with torch.optim.swa_utils, update_every, warm-up, float32 average."""


import pytest
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

import sema
from sema_testing import BNNet, train_steps


def test_hand_computed_two_updates():
    lin = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 2.0]]))
    ema = sema.EMA(lin, decay=0.5)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[3.0, 6.0]]))
    ema.update()  # 0.5 * [1, 2] + 0.5 * [3, 6] = [2, 4]
    assert torch.equal(ema.average.weight, torch.tensor([[2.0, 4.0]]))
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.0, 0.0]]))
    ema.update()  # 0.5 * [2, 4] = [1, 2]
    assert torch.equal(ema.average.weight, torch.tensor([[1.0, 2.0]]))
    assert (ema.step, ema.updates, ema.epoch) == (2, 2, 0)


def test_parity_with_swa_utils_ema_50_steps(bnnet):
    ref = AveragedModel(bnnet, multi_avg_fn=get_ema_multi_avg_fn(0.99), use_buffers=True)
    ref.update_parameters(bnnet)  # AveragedModel's first update copies; ours copies at binding
    ema = sema.EMA(bnnet, decay=0.99)
    train_steps(bnnet, ema, 50, after_step=lambda i: ref.update_parameters(bnnet))
    theirs = ref.module.state_dict()
    for name, mine in ema.average.state_dict().items():
        if mine.is_floating_point():
            assert torch.equal(mine, theirs[name]), name  # same kernel, same order: bit for bit
    assert ema.average.bn.num_batches_tracked.item() == 50  # integer buffers are copied


def test_update_every_and_warmup_counted_in_calls():
    lin = torch.nn.Linear(1, 1, bias=False)
    ema = sema.EMA(lin, decay=0.9, update_every=2, warmup_steps=4, warmup="linear", warmup_ratio=0.5)
    expected = lin.weight.detach().clone()
    for call in range(1, 9):
        with torch.no_grad():
            lin.weight.fill_(float(call))
        ema.update()
        if call % 2 == 0:
            t = call - 1
            d = 0.9 * (1 - (1 - t / 4) * 0.5) if t < 4 else 0.9
            expected = d * expected + (1 - d) * call
        assert torch.allclose(ema.average.weight, expected, rtol=1e-6), call
    assert ema.updates == 4 and ema.step == 8


def test_bf16_model_float32_average_keeps_small_updates():
    model = torch.nn.Linear(4, 4, bias=False).bfloat16()
    with torch.no_grad():
        model.weight.fill_(1.0)
    fp32 = sema.EMA(model, decay=0.999)
    bf16 = sema.EMA(model, decay=0.999, average_dtype=torch.bfloat16)
    assert fp32.average.weight.dtype == torch.float32 and bf16.average.weight.dtype == torch.bfloat16
    with torch.no_grad():
        model.weight.fill_(1.5)  # each update should move the average by 0.001 * (1.5 - avg) ~= 0.0005
    for _ in range(100):
        fp32.update()
        bf16.update()
    # float32: 1 + 0.5 * (1 - 0.999**100) = 1.047581...
    assert fp32.average.weight.mean().item() == pytest.approx(1 + 0.5 * (1 - 0.999**100), rel=1e-6)
    # bf16 spacing at 1.0 is 2**-7 = 0.0078: every 0.0005 step rounds back to 1.0 and the average never moves
    assert torch.equal(bf16.average.weight, torch.ones(4, 4, dtype=torch.bfloat16))


def test_float64_model_keeps_float64_average():
    ema = sema.EMA(torch.nn.Linear(2, 2).double())
    assert ema.average.weight.dtype == torch.float64


def test_device_cpu_and_string_dtype():
    ema = sema.EMA(torch.nn.Linear(3, 3), device="cpu", average_dtype="float64")
    assert ema.average.weight.dtype == torch.float64 and ema.average.weight.device.type == "cpu"
    ema.update()


def test_average_module_is_eval_and_frozen(bnnet):
    ema = sema.EMA(bnnet)
    assert not ema.average.training
    assert not any(p.requires_grad for p in ema.average.parameters())
    assert all(p.requires_grad for p in bnnet.parameters())


def test_update_does_not_create_graph(bnnet):
    ema = sema.EMA(bnnet)
    bnnet(torch.randn(4, 4)).sum().backward()
    ema.update()
    assert all(p.grad_fn is None and not p.requires_grad for p in ema.average.parameters())


def test_copy_to_other_module_and_bound(bnnet):
    ema = sema.EMA(bnnet, decay=0.5)
    train_steps(bnnet, ema, 3)
    other = BNNet()
    ema.copy_to(other)
    for k, v in other.state_dict().items():
        assert torch.equal(v, ema.average.state_dict()[k].to(v.dtype)), k
    ema.copy_to()
    for k, v in bnnet.state_dict().items():
        assert torch.equal(v, ema.average.state_dict()[k]), k
    wrong = BNNet()
    wrong.fc3 = torch.nn.Linear(1, 1)
    with pytest.raises(ValueError, match=r"in the target but not in the average: \['fc3.weight', 'fc3.bias'\]"):
        ema.copy_to(wrong)
    with pytest.raises(ValueError, match=r"fc1.weight: expected \(16, 4\), got \(8, 4\)"):
        ema.copy_to(BNNet(width=16))


def test_protocol_satisfied(bnnet):
    for cls in (sema.EMA, sema.SEMA, sema.SWA):
        assert isinstance(cls(bnnet), sema.WeightAverager)
