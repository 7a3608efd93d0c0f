"""Tiny real models and a training loop shared by the sema tests (imported by name: `from sema_testing import ...`)."""

import torch
from torch import nn


class BNNet(nn.Module):
    """Linear -> BatchNorm -> Linear: parameters, floating buffers and an integer buffer."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, width)
        self.bn = nn.BatchNorm1d(width)
        self.fc2 = nn.Linear(width, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.bn(self.fc1(x))))


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
