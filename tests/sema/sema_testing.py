"""Tiny real models and a training loop shared by the sema tests (imported by name: `from sema_testing import ...`)."""

import torch

from sema.testing import BNNet  # noqa: F401  (re-exported: the tests import it from here)


def train_steps(model, averager, steps, lr=0.1, seed=1, after_step=None):
    """Plain SGD steps on random data; averager.update() after each; after_step(i) hook."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    for i in range(steps):
        x = torch.randn(6, 4, generator=g)
        loss = model(x.to(next(model.parameters()).dtype)).float().pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if averager is not None:
            averager.update()
        if after_step is not None:
            after_step(i)
    return opt


def state_copy(module):
    """A detached copy of `module.state_dict()` (parameters and buffers)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_same_state(a, b):
    """Two state dicts hold the same keys and bitwise equal tensors."""
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
