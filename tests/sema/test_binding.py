"""Binding: swapped() restores bit for bit, torch.compile / DDP names, model.to() after binding, changed models."""


import pytest
import torch
from torch import nn

import sema
from sema._binding import TensorPlan, canonical_name, make_average, unwrap
from sema_testing import BNNet, train_steps


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_same(model, snap):
    for k, v in model.state_dict().items():
        assert v.dtype == snap[k].dtype and torch.equal(v, snap[k]), k


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_swapped_restores_exactly_also_on_exception(dtype):
    model = BNNet().to(dtype)
    avg = sema.EMA(model, decay=0.9)
    train_steps(model, avg, 4)
    snap, avg_snap = _snapshot(model), _snapshot(avg.average)
    with avg.swapped() as inside:
        assert inside is model
        assert torch.equal(model.fc1.weight, avg_snap["fc1.weight"].to(dtype))
        assert torch.equal(model.bn.running_var, avg_snap["bn.running_var"].to(dtype))
        with pytest.raises(RuntimeError, match="inside swapped"):
            avg.update()
    _assert_same(model, snap)
    _assert_same(avg.average, avg_snap)
    with pytest.raises(ZeroDivisionError):
        with avg.swapped():
            1 / 0
    _assert_same(model, snap)
    _assert_same(avg.average, avg_snap)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_writes_inside_swapped_go_to_average_unless_staged(dtype):
    # The documented contract: swapped() is an exchange for same-dtype groups (a write inside reaches the
    # average) and a backup/restore for staged bf16 groups (the float32 average is left untouched).
    model = BNNet().to(dtype)
    avg = sema.EMA(model, decay=0.9)
    train_steps(model, avg, 3)
    snap, avg_snap = _snapshot(model), _snapshot(avg.average)
    with avg.swapped():
        model.bn.running_mean.fill_(7.0)
    _assert_same(model, snap)
    written = avg.average.bn.running_mean
    if dtype == torch.float32:
        assert torch.equal(written, torch.full_like(written, 7.0))
    else:
        assert torch.equal(written, avg_snap["bn.running_mean"])


def test_swapped_in_small_chunks_exact():
    model = BNNet()
    avg = sema.EMA(model, decay=0.9)
    avg._plan.chunk_numel = 7  # many chunks through a tiny scratch buffer
    train_steps(model, avg, 2)
    snap, avg_snap = _snapshot(model), _snapshot(avg.average)
    with avg.swapped():
        _assert_same(model, avg_snap)
    _assert_same(model, snap)
    # at most the largest single tensor (fc1.weight, 32 floats) plus the int64 counter: never a model copy
    assert avg._plan.scratch_bytes() <= 32 * 4 + 8


def test_staged_update_in_chunks_matches_reference():
    model = BNNet().bfloat16()
    ref = {k: v.float().clone() for k, v in model.state_dict().items()}
    avg = sema.EMA(model, decay=0.75)
    avg._plan.chunk_numel = 5
    avg._plan._build()
    train_steps(model, avg, 1)
    for k, v in model.state_dict().items():
        expected = 0.75 * ref[k] + 0.25 * v.float() if v.is_floating_point() else v
        torch.testing.assert_close(avg.average.state_dict()[k], expected.to(avg.average.state_dict()[k].dtype))


def test_compile_prefix_and_compiled_forward_sees_switch():
    model = BNNet()
    compiled = torch.compile(model, backend="eager")
    avg = sema.SEMA(compiled, decay=0.5)
    assert "fc1.weight" in avg.state_dict()["average"]
    assert not any("_orig_mod" in k for k in avg.state_dict()["average"])
    x = torch.randn(5, 4)
    train_steps(model, avg, 2)
    avg.epoch_end()
    compiled.eval()
    avg.average.eval()
    torch.testing.assert_close(compiled(x), avg.average(x))
    # a state_dict whose names carry the compile prefix loads too
    sd = avg.state_dict()
    sd["average"] = {f"_orig_mod.{k}": v.clone() for k, v in sd["average"].items()}
    sema.SEMA(compiled, decay=0.5).load_state_dict(sd)


def test_unwrap_and_canonical_names():
    model = BNNet()
    assert unwrap(torch.compile(model, backend="eager")) is model
    assert canonical_name("module._orig_mod.fc1.weight") == "fc1.weight"
    assert canonical_name("_orig_mod.block.module.w") == "block.module.w"


def test_model_to_dtype_after_binding_keeps_working():
    model = BNNet()
    avg = sema.EMA(model, decay=0.5)
    model.double()  # parameters keep their identity, their data is replaced; buffers are replaced
    train_steps(model, avg, 1)
    assert avg._plan.groups[0].model_dtype == torch.float64
    # the average (float32 by default) kept tracking the model's new tensors, buffers included
    assert avg.average.bn.num_batches_tracked.item() == 1


def test_memory_format_change_after_binding():
    conv = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    avg = sema.EMA(conv, decay=0.5)
    conv.to(memory_format=torch.channels_last)  # param.data replaced, same device and dtype
    with torch.no_grad():
        conv[0].weight.fill_(2.0)
    start = avg.average[0].weight.detach().clone()
    avg.update()
    torch.testing.assert_close(avg.average[0].weight, 0.5 * start + 1.0)


def test_model_to_other_device_after_binding_average_follows():
    # "meta" stands in for a second device on CPU-only machines: the same code path as model.cuda()
    model = BNNet()
    avg = sema.SEMA(model, decay=0.5)
    model.to("meta")
    avg.update()
    assert avg.average.fc1.weight.device.type == "meta" and avg.average.bn.running_mean.device.type == "meta"
    assert all(g.model_device.type == "meta" == g.average_device.type for g in avg._plan.groups)
    assert avg.epoch_end()
    pinned = sema.EMA(BNNet(), device="cpu")  # an explicit device is kept
    pinned._plan.module.to("meta")
    pinned._plan.check()
    assert pinned.average.fc1.weight.device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_model_to_cuda_after_binding():
    model = BNNet()
    avg = sema.SEMA(model, decay=0.5)
    model.cuda()
    train_steps(model, avg, 2)
    assert avg.average.fc1.weight.device.type == "cuda"
    assert avg.epoch_end()
    assert torch.equal(model.fc1.weight, avg.average.fc1.weight)


def test_changed_parameter_set_raises():
    model = BNNet()
    avg = sema.EMA(model)
    model.head = nn.Linear(3, 2)
    with pytest.raises(ValueError, match=r"parameters changed since the average was bound: added \['head.weight', "
                                         r"'head.bias'\], removed none"):
        avg.epoch_end()
    model2 = BNNet()
    avg2 = sema.EMA(model2)
    model2.fc2 = nn.Linear(8, 5)  # same names, new shapes
    with pytest.raises(ValueError, match=r"changed shape.*fc2.weight"):
        avg2.update()


def test_replaced_same_shape_parameters_rebind_silently():
    model = BNNet()
    avg = sema.EMA(model, decay=0.5)
    model.fc2 = nn.Linear(8, 3)  # new objects, same names and shapes (e.g. re-initialised head)
    with torch.no_grad():
        model.fc2.weight.fill_(1.0)
    start = avg.average.fc2.weight.detach().clone()
    avg.epoch_end()
    avg.update()
    torch.testing.assert_close(avg.average.fc2.weight, 0.5 * start + 0.5)


def test_tied_weights_stay_tied():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(5, 3)
            self.out = nn.Linear(3, 5, bias=False)
            self.out.weight = self.emb.weight

    avg = make_average(Tied())
    assert avg.out.weight is avg.emb.weight
    plan = TensorPlan(Tied(), make_average(Tied()))
    assert plan.names == ["emb.weight"]


def test_model_without_parameters_rejected():
    with pytest.raises(ValueError, match="has no parameters"):
        sema.EMA(nn.ReLU())


def test_alloc_like_and_targets():
    model = BNNet()
    avg = sema.EMA(model)
    plan = avg._plan
    zeros = plan.alloc_like("zeros")
    plan.lerp_(0.5, zeros)  # zeros <- 0.5 * model for averaged groups; copies for "copy" groups
    for g, ts in zip(plan.groups, zeros):
        for m, t in zip(g.model, ts):
            expected = 0.5 * m if g.kind == "lerp" else m
            torch.testing.assert_close(t, expected.to(t.dtype))
    plan.copy_into_model(source=plan.alloc_like("average"))
    assert torch.equal(model.fc1.weight, avg.average.fc1.weight)
