"""Lookahead: the closed form on a quadratic, a naive two-copy reimplementation, the optimizer-hook path."""

import copy

import pytest
import torch

import sema
from sema_testing import BNNet


def _quadratic_run(lookahead_steps, k, alpha, lr, wrap):
    """f(theta) = theta^2 / 2 with plain SGD: each fast step multiplies theta by (1 - lr)."""
    lin = torch.nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        lin.weight.fill_(1.0)
    la = sema.Lookahead(lin, k=k, alpha=alpha, average_dtype=torch.float64)
    opt = torch.optim.SGD(lin.parameters(), lr=lr)
    if wrap:
        assert la.wrap_optimizer(opt) is opt
    for _ in range(lookahead_steps):
        opt.zero_grad()
        (0.5 * lin.weight.pow(2).sum()).backward()
        opt.step()
        la.update()  # a no-op when wrapped: the hook has counted the step already
    return lin, la


@pytest.mark.parametrize("wrap", [False, True], ids=["update", "wrap_optimizer"])
def test_closed_form_on_quadratic(wrap):
    k, alpha, lr, syncs = 5, 0.5, 0.1, 4
    lin, la = _quadratic_run(k * syncs + 2, k, alpha, lr, wrap)
    # one sync maps phi to (1 - alpha + alpha * (1 - lr)^k) phi; then 2 more fast steps from phi
    phi = (1 - alpha + alpha * (1 - lr) ** k) ** syncs
    assert la.syncs == syncs and la.step == k * syncs + 2
    assert la.average.weight.item() == pytest.approx(phi, rel=1e-13)
    assert lin.weight.item() == pytest.approx(phi * (1 - lr) ** 2, rel=1e-13)


def test_matches_naive_two_copy_reimplementation_with_momentum():
    torch.manual_seed(0)
    model = BNNet().double()
    fast = copy.deepcopy(model)
    slow = {k: v.detach().clone() for k, v in fast.named_parameters()}
    la = sema.Lookahead(model, k=3, alpha=0.8, average_dtype=torch.float64)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    opt_ref = torch.optim.SGD(fast.parameters(), lr=0.05, momentum=0.9)
    for step in range(1, 14):
        x = torch.randn(6, 4, dtype=torch.float64)
        for m, o in ((model, opt), (fast, opt_ref)):
            o.zero_grad()
            m(x).pow(2).mean().backward()
            o.step()
        la.update()
        if step % 3 == 0:  # the paper's Algorithm 1; the inner optimizer keeps its momentum
            with torch.no_grad():
                for name, p in fast.named_parameters():
                    slow[name] += 0.8 * (p - slow[name])
                    p.copy_(slow[name])
    for name, p in model.named_parameters():
        torch.testing.assert_close(p, dict(fast.named_parameters())[name], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(dict(la.average.named_parameters())[name], slow[name], rtol=1e-12, atol=1e-12)
    # BN statistics are the model's own (buffers="ignore"): they match the naive run's, which never touched them
    assert torch.equal(model.bn.running_mean, fast.bn.running_mean)
    assert torch.equal(la.average.bn.running_mean, model.bn.running_mean)


def test_sync_keeps_optimizer_state():
    model = torch.nn.Linear(2, 2)
    la = sema.Lookahead(model, k=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    before = {id(p): opt.state[p]["momentum_buffer"].clone() for p in model.parameters()}
    la.update()  # k = 1: syncs now and writes into the model
    assert la.syncs == 1
    for p in model.parameters():
        assert torch.equal(opt.state[p]["momentum_buffer"], before[id(p)])


def test_wrap_optimizer_errors():
    model = torch.nn.Linear(2, 2)
    la = sema.Lookahead(model)
    with pytest.raises(ValueError, match="is not a torch.optim.Optimizer"):
        la.wrap_optimizer(object())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    la.wrap_optimizer(opt)
    with pytest.raises(RuntimeError, match="already called"):
        la.wrap_optimizer(opt)


@pytest.mark.parametrize("kwargs,message", [
    (dict(k=0), r"k=0 must be an integer >= 1"),
    (dict(alpha=0.0), r"alpha=0.0 is outside the allowed range \(0, 1\]"),
    (dict(alpha=1.01), r"alpha=1.01 is outside the allowed range \(0, 1\]"),
    (dict(buffers="bn"), r"buffers='bn' is not supported"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sema.Lookahead(torch.nn.Linear(1, 1), **kwargs)


def test_wrapped_optimizer_checkpoint_round_trip_is_bit_for_bit():
    """The engine's path: wrap_optimizer() at build time, then resume from a weights_only checkpoint."""
    import io

    torch.manual_seed(0)
    init = BNNet().state_dict()

    def build(checkpoint=None):
        model = BNNet()
        model.load_state_dict(init if checkpoint is None else checkpoint["model"])
        la = sema.Lookahead(model, k=3)
        opt = la.wrap_optimizer(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
        if checkpoint is not None:
            opt.load_state_dict(checkpoint["opt"])
            la.load_state_dict(checkpoint["la"])
        return model, la, opt

    def train(model, la, opt, lo, hi):
        for i in range(lo, hi):
            opt.zero_grad()
            model(torch.randn(6, 4, generator=torch.Generator().manual_seed(i))).pow(2).mean().backward()
            opt.step()
            la.update()  # ignored: the hook counts

    model_a, la_a, opt_a = build()
    train(model_a, la_a, opt_a, 0, 11)
    model_b, la_b, opt_b = build()
    train(model_b, la_b, opt_b, 0, 4)
    buf = io.BytesIO()
    torch.save({"model": model_b.state_dict(), "opt": opt_b.state_dict(), "la": la_b.state_dict()}, buf)
    buf.seek(0)
    model_c, la_c, opt_c = build(torch.load(buf, weights_only=True))
    assert (la_c.step, la_c.syncs) == (4, 1)
    train(model_c, la_c, opt_c, 4, 11)
    assert la_a.syncs == la_c.syncs == 3
    for k, v in model_a.state_dict().items():
        assert torch.equal(v, model_c.state_dict()[k]), k
    for k, v in la_a.average.state_dict().items():
        assert torch.equal(v, la_c.average.state_dict()[k]), k
