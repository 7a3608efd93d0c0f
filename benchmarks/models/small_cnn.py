"""A small CIFAR-style CNN for CPU runs: three conv-BN-ReLU stages and a linear head (~0.1M parameters at width 32).

It has BatchNorm on purpose: running statistics are buffers, and how a weight-averaging method treats them
(average, copy, ignore) is part of what the benchmark compares. Any input size of 8x8 or more works.
"""

from __future__ import annotations

from torch import nn


def _stage(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
    layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class SmallCNN(nn.Module):
    """conv(w) -> pool -> conv(2w) -> pool -> conv(4w) -> global average pool -> linear."""

    def __init__(self, num_classes: int, in_chans: int = 3, width: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            _stage(in_chans, width, pool=True),
            _stage(width, 2 * width, pool=True),
            _stage(2 * width, 4 * width, pool=False),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        return self.head(self.features(x))
