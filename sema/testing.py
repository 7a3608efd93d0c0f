"""The test template every weight-averaging method passes (any `sema.protocol.WeightAverager`), importable from
anywhere `sema` is installed (it needs pytest at call time):

    from sema.testing import check_all, template_kwargs
    def test_my_method_template():
        check_all(lambda model: MyMethod(model, k=2), MyMethod, bad_kwargs=[dict(k=0)])

Inside this repository every entry of `sema.METHODS` runs through it automatically (tests/sema/test_all_methods.py),
built with `template_kwargs(cls)`: its `Settings` defaults at 3 steps per epoch, with a fast decay.

What is checked, on a small real model with BatchNorm (parameters, floating and integer buffers):

* protocol: `isinstance(obj, WeightAverager)`; `average` is a module with the model's tensor names and shapes;
  `epoch_end()` returns a bool;
* checkpoint round trip: train, save (model, optimizer, method) through `torch.save` and
  `torch.load(weights_only=True)`, rebuild everything fresh, load, train on: model and average are bit for bit
  those of a run that never stopped (resuming mid-epoch and right after an epoch end);
* `swapped()`: inside, the model's parameters are the average's; on exit, also when the body raises, the model
  is bit for bit what it was, and the average is unchanged;
* `copy_to(other)`: another module of the same architecture receives the average's parameters;
* a bf16 model: the average is kept in float32, finite, and `swapped()` restores the model exactly;
* no host-device synchronisation in `update()`: on CUDA under `torch.cuda.set_sync_debug_mode("error")`; on the
  CPU no call of a tensor-to-Python conversion (`.item()`, `.tolist()`, `bool(t)`, `float(t)`, `.cpu()`,
  `.numpy()`, `nonzero()`, ...) is seen by a TorchFunctionMode while `update()` runs;
* refused checkpoints: a state_dict missing any one of its entries raises a ValueError naming it and listing a
  valid state's keys; NaN or inf in an averaged tensor of any tensor section raises a ValueError naming the tensor;
  a refused state changes nothing (the object still saves what it saved before);
* a model changed after binding (a parameter reshaped in place, `p.data = ...`, or replaced by a Parameter of
  another shape): `update()` (followed by `epoch_end()`), `epoch_end()`, `copy_to()`, `swapped()`, `average` and
  `state_dict()` raise a ValueError naming the parameter, its bound and its new shape, and saying to build a new
  averager, never a bare tensor-size error;
* bad arguments: each raises ValueError.
"""

from __future__ import annotations

import copy
import io
import re
from typing import Any, Callable

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from sema.protocol import WeightAverager

Factory = Callable[[nn.Module], Any]


class BNNet(nn.Module):
    """Linear -> BatchNorm -> Linear: parameters, floating buffers and an integer buffer."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, width)
        self.bn = nn.BatchNorm1d(width)
        self.fc2 = nn.Linear(width, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.bn(self.fc1(x))))


# The recipe values a template run uses for the recipe-dependent settings (sema.settings.recipe_field).
TEMPLATE_RECIPE = {"decay": 0.9, "warmup_epochs": 0.0, "switch_start": 0.0, "tail_start": 0.0}


def template_kwargs(cls: type, steps_per_epoch: int = 3, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments for `cls(model, ...)` in a template run: `cls.Settings` defaults (recipe fields from
    TEMPLATE_RECIPE), converted at `steps_per_epoch` (the template ends an epoch every 3 steps), then `overrides`."""
    import dataclasses

    from sema.settings import RECIPE_KEY

    fields = {f.name: TEMPLATE_RECIPE[f.metadata[RECIPE_KEY]]
              for f in dataclasses.fields(cls.Settings) if RECIPE_KEY in f.metadata}
    return {**cls.Settings(**fields).kwargs(steps_per_epoch), **overrides}


def _pytest():
    import pytest  # only the checks need it: importing sema.testing does not

    return pytest

# Tensor methods that copy a value to the host (a device synchronisation on CUDA) or return Python numbers.
SYNCING = {"item", "tolist", "__bool__", "__float__", "__int__", "__index__", "__complex__", "numpy", "cpu",
           "nonzero", "argwhere", "masked_select", "unique", "__array__", "__format__", "__repr__"}


def _save_load(obj: Any) -> Any:
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _train(model: nn.Module, opt: torch.optim.Optimizer, avg: Any, lo: int, hi: int, epoch_every: int = 3,
           device: str = "cpu") -> None:
    """Optimizer steps lo..hi-1 on data fixed by the step index; update() after each; an epoch every 3 steps."""
    model.train()
    for i in range(lo, hi):
        x = torch.randn(6, 4, generator=torch.Generator().manual_seed(i))
        x = x.to(device=device, dtype=next(model.parameters()).dtype)
        opt.zero_grad()
        model(x).float().pow(2).mean().backward()
        opt.step()
        avg.update()
        if i % epoch_every == epoch_every - 1:
            assert isinstance(avg.epoch_end(), bool)


def _params(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _assert_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], what: str) -> None:
    assert a.keys() == b.keys(), what
    for k in a:
        assert torch.equal(a[k], b[k].to(a[k].dtype)), f"{what}: {k} differs"


def check_protocol(make: Factory) -> None:
    model = BNNet()
    avg = make(model)
    assert isinstance(avg, WeightAverager)
    reference = model.state_dict()
    got = avg.average.state_dict()
    assert set(got) == set(reference)
    assert all(got[k].shape == reference[k].shape for k in reference)


def check_round_trip(make: Factory, total: int = 11) -> None:
    """Stop at 4 (mid-epoch) and at 6 (right after an epoch end), resume from a weights_only checkpoint."""
    torch.manual_seed(0)
    straight = BNNet()
    init = copy.deepcopy(straight.state_dict())
    avg_a = make(straight)
    opt_a = torch.optim.SGD(straight.parameters(), lr=0.1, momentum=0.9)
    _train(straight, opt_a, avg_a, 0, total)
    for stop in (4, 6):
        model_b = BNNet()
        model_b.load_state_dict(init)
        avg_b = make(model_b)
        opt_b = torch.optim.SGD(model_b.parameters(), lr=0.1, momentum=0.9)
        _train(model_b, opt_b, avg_b, 0, stop)
        ckpt = _save_load({"model": model_b.state_dict(), "opt": opt_b.state_dict(), "avg": avg_b.state_dict()})
        del model_b, avg_b, opt_b
        model_c = BNNet()
        model_c.load_state_dict(ckpt["model"])
        opt_c = torch.optim.SGD(model_c.parameters(), lr=0.1, momentum=0.9)
        opt_c.load_state_dict(ckpt["opt"])
        avg_c = make(model_c)
        avg_c.load_state_dict(ckpt["avg"])
        _train(model_c, opt_c, avg_c, stop, total)
        _assert_equal(_state(avg_a.average), _state(avg_c.average), f"average after resuming at step {stop}")
        _assert_equal(_state(straight), _state(model_c), f"model after resuming at step {stop}")


def check_swapped_restores(make: Factory) -> None:
    model = BNNet()
    avg = make(model)
    _train(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), avg, 0, 7)
    before_model, before_avg = _state(model), _state(avg.average)
    with _pytest().raises(RuntimeError, match="raised inside swapped"):
        with avg.swapped() as inside:
            _assert_equal(_params(inside), _params_of_state(before_avg, model), "model inside swapped()")
            raise RuntimeError("raised inside swapped")
    _assert_equal(_state(model), before_model, "model after swapped()")
    _assert_equal(_state(avg.average), before_avg, "average after swapped()")


def _params_of_state(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: state[k].to(p.dtype) for k, p in model.named_parameters()}


def check_copy_to(make: Factory) -> None:
    model = BNNet()
    avg = make(model)
    _train(model, torch.optim.SGD(model.parameters(), lr=0.1), avg, 0, 7)
    other = BNNet()
    avg.copy_to(other)
    _assert_equal(_params(other), _params(avg.average), "copy_to(other)")


def check_bf16_model(make: Factory) -> None:
    """A bf16 model: the average is float32 and finite, and swapped() still restores the model bit for bit."""
    model = BNNet().bfloat16()
    avg = make(model)
    _train(model, torch.optim.SGD(model.parameters(), lr=0.1), avg, 0, 7)
    for name, p in avg.average.named_parameters():
        assert p.dtype == torch.float32 and torch.isfinite(p).all(), name
    before = _state(model)
    with avg.swapped():
        pass
    _assert_equal(_state(model), before, "bf16 model after swapped()")


class _SyncSpy(TorchFunctionMode):
    """Records every torch function / Tensor method call whose name is in SYNCING."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in SYNCING:
            self.seen.append(name)
        return func(*args, **(kwargs or {}))


def check_no_host_sync(make: Factory, steps: int = 12) -> None:
    """update() over `steps` optimizer steps (covering every cadence in the test kwargs) never syncs."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = BNNet().to(device)
    avg = make(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for i in range(steps):
        x = torch.randn(6, 4, generator=torch.Generator().manual_seed(i)).to(device)
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
            try:
                avg.update()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        else:
            with _SyncSpy() as spy:
                avg.update()
            assert not spy.seen, f"update() at step {i + 1} called {spy.seen}, which read device values on the host"


def check_declared_passivity(make: Factory) -> None:
    """A method's `writes_model` tells the truth. A passive one (False) leaves training bit for bit as it is
    without it: the same model after 9 steps, 3 epoch ends and an evaluation through swapped() each epoch (which is
    why one trajectory can carry many passive methods). A writing one (True) changes the model at some epoch end."""
    torch.manual_seed(0)
    plain = BNNet()
    with_method = copy.deepcopy(plain)
    opt_plain = torch.optim.SGD(plain.parameters(), lr=0.1, momentum=0.9)
    opt = torch.optim.SGD(with_method.parameters(), lr=0.1, momentum=0.9)
    avg = make(with_method)
    opt = avg.wrap_optimizer(opt) if hasattr(avg, "wrap_optimizer") else opt
    wrote = False
    for epoch in range(3):
        for model, optimizer, method in ((plain, opt_plain, None), (with_method, opt, avg)):
            for i in range(3 * epoch, 3 * epoch + 3):
                x = torch.randn(6, 4, generator=torch.Generator().manual_seed(i))
                optimizer.zero_grad()
                model(x).pow(2).mean().backward()
                optimizer.step()
                if method is not None:
                    method.update()
        wrote |= bool(avg.epoch_end())
        with avg.swapped():
            pass
        same = all(torch.equal(a, b) for a, b in zip(_state(plain).values(), _state(with_method).values()))
        if not type(avg).writes_model:
            assert same and not wrote, f"{type(avg).__name__} declares writes_model=False but changed the model"
    if type(avg).writes_model:
        assert wrote or not same, f"{type(avg).__name__} declares writes_model=True but never changed the model"


def _tensor_sections(state: Any, path: tuple = ()) -> list[tuple[tuple, dict[str, torch.Tensor]]]:
    """(path, {name: tensor}) for every tensor section of a state_dict ("average", BEMA's "ema", each LAWA
    snapshot in "queue", ...)."""
    if isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values()):
        return [(path, state)]
    items = state.items() if isinstance(state, dict) else enumerate(state) if isinstance(state, list) else ()
    return [found for key, value in items for found in _tensor_sections(value, (*path, key))]


def _with(state: Any, path: tuple, name: str, value: torch.Tensor) -> Any:
    """A copy of `state` (tensors shared) whose section at `path` has `name` replaced by `value`."""
    if not path:
        return {**state, name: value}
    head, rest = path[0], path[1:]
    if isinstance(state, list):
        return [_with(v, rest, name, value) if i == head else v for i, v in enumerate(state)]
    return {**state, head: _with(state[head], rest, name, value)}


def _same_state(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_same_state, a, b))
    return a == b


def check_refused_states(make: Factory) -> None:
    """load_state_dict names what is wrong with a bad state (missing entries, non-finite averaged tensors) and
    leaves the object as it was."""
    pytest = _pytest()
    torch.manual_seed(0)
    model = BNNet()
    avg = make(model)
    _train(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), avg, 0, 7)
    saved = _save_load(avg.state_dict())
    target = make(BNNet())
    before = _save_load(target.state_dict())
    entries = [k for k in saved if k not in ("format", "version", "method")]
    for key in entries:
        with pytest.raises(ValueError, match=re.escape(f"missing [{key!r}]")) as err:
            target.load_state_dict({k: v for k, v in saved.items() if k != key})
        assert all(repr(k) in str(err.value) for k in saved), f"the message does not list a valid state: {err.value}"
    sections = _tensor_sections(saved)
    assert sections, "a state_dict holds its tensors in {name: tensor} sections"
    for path, section in sections:
        for value in (float("nan"), float("inf")):
            bad_tensor = section["fc1.weight"].clone()
            bad_tensor.view(-1)[1] = value
            with pytest.raises(ValueError, match=r"non-finite values in fc1\.weight"):
                target.load_state_dict(_with(saved, path, "fc1.weight", bad_tensor))
    assert _same_state(_save_load(target.state_dict()), before), "a refused state_dict changed the object"
    target.load_state_dict(saved)
    assert _same_state(_save_load(target.state_dict()), saved), "the valid state_dict did not load"


RESHAPE_OPS = ("update", "epoch_end", "copy_to", "swapped", "average", "state_dict")


def _run_op(avg: Any, op: str) -> None:
    if op == "update":  # a replaced tensor other than a group's first is seen at the next check (epoch_end)
        for _ in range(4):
            avg.update()
        avg.epoch_end()
    elif op == "epoch_end":
        avg.epoch_end()
    elif op == "copy_to":
        avg.copy_to()
    elif op == "swapped":
        with avg.swapped():
            pass
    elif op == "average":
        avg.average  # noqa: B018  (reading it is the operation)
    else:
        avg.state_dict()


def check_reshaped_model(make: Factory) -> None:
    """A parameter reshaped (in place or by a new Parameter) after binding: every call names it, with the bound and
    the new shape, and says to build a new averager."""
    pytest = _pytest()
    for module, leaf in (("fc1", "weight"), ("fc2", "bias")):  # a group's first tensor, and its last
        for how in ("data", "parameter"):
            for op in RESHAPE_OPS:
                model = BNNet()
                avg = make(model)
                _train(model, torch.optim.SGD(model.parameters(), lr=0.1), avg, 0, 2)
                owner = getattr(model, module)
                bound = tuple(getattr(owner, leaf).shape)
                shape = (bound[0] + 1, *bound[1:])
                if how == "data":
                    getattr(owner, leaf).data = torch.zeros(shape)
                else:
                    setattr(owner, leaf, nn.Parameter(torch.zeros(shape)))
                expected = f"{module}.{leaf}: bound {bound}, now {shape}"
                with pytest.raises(ValueError, match=re.escape(expected) + r".*build a new"):
                    _run_op(avg, op)


def check_bad_arguments(cls: type, bad_kwargs: list[dict[str, Any]]) -> None:
    assert bad_kwargs, f"{cls.__name__}: list at least one bad argument it must reject"
    for kwargs in bad_kwargs:
        with _pytest().raises(ValueError):
            cls(BNNet(), **kwargs)


def check_all(make: Factory, cls: type, bad_kwargs: list[dict[str, Any]]) -> None:
    check_protocol(make)
    check_round_trip(make)
    check_swapped_restores(make)
    check_copy_to(make)
    check_bf16_model(make)
    check_no_host_sync(make)
    check_declared_passivity(make)
    check_refused_states(make)
    check_reshaped_model(make)
    check_bad_arguments(cls, bad_kwargs)
