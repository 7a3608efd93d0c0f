"""Wide ResNets for 32x32 images (Zagoruyko & Komodakis, 2016): WRN-depth-k, e.g. WRN-28-10 of the paper's CIFAR-100
table (not in timm, whose wide_resnet50_2 is the ImageNet bottleneck network).

    WRN-d-k: a 3x3 stem conv with 16 channels, then three groups of n = (d - 4) / 6 pre-activation basic blocks
    (BN-ReLU-conv3x3-BN-ReLU-dropout-conv3x3) with 16k, 32k, 64k channels, strides 1, 2, 2 (the first block of a
    group changes width and stride, with a 1x1 shortcut conv), then BN-ReLU, global average pooling, a linear layer.

WRN-28-10 has n = 4 blocks per group and 36.5M parameters with 100 classes (the published count). Initialisation as
the authors': He-normal (fan_out) convolutions, BN weight 1 / bias 0, linear bias 0.

`variant="openmixup"` is the network of openmixup's CIFAR configs (the FixMatch code's WRN): LeakyReLU(0.1) in place
of ReLU, BatchNorm with momentum 0.001 and eps 1e-3 (running statistics follow the batches ~100x more slowly),
biases on every convolution, and the 1x1 shortcut of a widening block fed the activated input only in the first
group (the raw input in the others); He-normal init for leaky ReLU.
"""

from __future__ import annotations

from torch import nn


VARIANTS = ("original", "openmixup")


def _parts(variant: str):
    """(BatchNorm factory, activation, conv bias) of a variant."""
    if variant == "openmixup":
        return (lambda c: nn.BatchNorm2d(c, momentum=0.001, eps=1e-3)), nn.LeakyReLU(0.1), True
    return nn.BatchNorm2d, nn.ReLU(), False


class BasicBlock(nn.Module):
    """Pre-activation block; `shortcut` is a 1x1 conv when width or stride changes. `activated_shortcut`: the
    projection sees the activated input (always in the original WRN; openmixup's: in the first group only)."""

    def __init__(self, cin: int, cout: int, stride: int, dropout: float, variant: str = "original",
                 activated_shortcut: bool = True) -> None:
        super().__init__()
        norm, self.act, bias = _parts(variant)
        self.bn1, self.conv1 = norm(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=bias)
        self.bn2, self.conv2 = norm(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=bias)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=bias) if (cin != cout or stride != 1) else None
        self.activated_shortcut = activated_shortcut

    def forward(self, x):
        out = self.act(self.bn1(x))
        if self.shortcut is None:
            skip = x
        else:
            skip = self.shortcut(out if self.activated_shortcut else x)
        out = self.conv1(out)
        out = self.conv2(self.dropout(self.act(self.bn2(out))))
        return out + skip


class WideResNet(nn.Module):
    def __init__(self, depth: int = 28, widen: int = 10, num_classes: int = 100, dropout: float = 0.0,
                 in_chans: int = 3, variant: str = "original") -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n + 4 (10, 16, 22, 28, 40, ...); got {depth}")
        if variant not in VARIANTS:
            raise ValueError(f"WRN variant={variant!r} is not allowed; choose one of: {', '.join(VARIANTS)}")
        norm, self.act, bias = _parts(variant)
        n, widths = (depth - 4) // 6, [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=bias)
        blocks, cin = [], widths[0]
        for group, stride in zip(range(3), (1, 2, 2)):
            for i in range(n):
                blocks.append(BasicBlock(cin, widths[group + 1], stride if i == 0 else 1, dropout, variant,
                                         activated_shortcut=variant == "original" or group == 0))
                cin = widths[group + 1]
        self.blocks = nn.Sequential(*blocks)
        self.bn = norm(cin)
        self.head = nn.Linear(cin, num_classes)
        gain = "leaky_relu" if variant == "openmixup" else "relu"
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity=gain)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.act(self.bn(self.blocks(self.conv1(x))))
        return self.head(x.mean(dim=(2, 3)))
