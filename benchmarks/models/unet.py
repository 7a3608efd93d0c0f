"""A small DDPM U-Net (the architecture family of Ho et al. 2020, sized down): predicts the noise eps(x_t, t).

Residual blocks (GroupNorm, SiLU, 3x3 convs) with the timestep's sinusoidal embedding added in each block, a
self-attention block at the chosen levels and in the middle, strided-conv downsampling and nearest-neighbour
upsampling, skip connections from every encoder block to the decoder. The sizes used (benchmarks/tasks/
generation.py::UNETS): 16 or 32 base channels with (1, 2, 2) = 0.28M / 1.1M parameters for CPU runs; 128 base
channels, (1, 2, 2, 2), two blocks per level, attention at 16x16 = DDPM's 35.7M CIFAR-10 network.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """[B] integer timesteps -> [B, dim] sinusoidal features (the Transformer's positional encoding)."""
    half = dim // 2
    frequencies = torch.exp(
        -math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half
    )
    angles = t.float()[:, None] * frequencies[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, channels // 4), channels)


class ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, time_dim: int, dropout: float):
        super().__init__()
        self.norm1, self.conv1 = _norm(in_ch), nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.time = nn.Linear(time_dim, out_ch)
        self.norm2, self.conv2 = _norm(out_ch), nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return h + self.skip(x)


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels, residual."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(-1, -2).unbind(1)
        attended = F.scaled_dot_product_attention(q, k, v)  # [b, hw, c]
        return x + self.out(attended.transpose(-1, -2).reshape(b, c, h, w))


class UNet(nn.Module):
    def __init__(
        self,
        in_channels: int = 1,
        base_channels: int = 32,
        channel_mults: tuple[int, ...] = (1, 2, 2),
        blocks_per_level: int = 1,
        attention_levels: tuple[int, ...] = (2,),
        dropout: float = 0.0,
    ):
        super().__init__()
        time_dim = 4 * base_channels
        self.base_channels = base_channels
        self.time_mlp = nn.Sequential(
            nn.Linear(base_channels, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim)
        )
        self.stem = nn.Conv2d(in_channels, base_channels, 3, padding=1)

        self.down = nn.ModuleList()
        skip_channels, ch = [base_channels], base_channels
        for level, mult in enumerate(channel_mults):
            for _ in range(blocks_per_level):
                self.down.append(
                    self._stage(ch, base_channels * mult, time_dim, dropout, level in attention_levels)
                )
                ch = base_channels * mult
                skip_channels.append(ch)
            if level < len(channel_mults) - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skip_channels.append(ch)

        self.mid = nn.ModuleList(
            [ResBlock(ch, ch, time_dim, dropout), AttentionBlock(ch), ResBlock(ch, ch, time_dim, dropout)]
        )

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mults))):
            for _ in range(blocks_per_level + 1):
                out = base_channels * mult
                self.up.append(
                    self._stage(ch + skip_channels.pop(), out, time_dim, dropout, level in attention_levels)
                )
                ch = out
            if level > 0:
                self.up.append(
                    nn.Sequential(
                        nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, ch, 3, padding=1)
                    )
                )

        self.head = nn.Sequential(_norm(ch), nn.SiLU(), nn.Conv2d(ch, in_channels, 3, padding=1))

    @staticmethod
    def _stage(in_ch: int, out_ch: int, time_dim: int, dropout: float, attention: bool) -> nn.ModuleList:
        return nn.ModuleList(
            [ResBlock(in_ch, out_ch, time_dim, dropout)] + ([AttentionBlock(out_ch)] if attention else [])
        )

    @staticmethod
    def _run_stage(stage: nn.ModuleList, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        for layer in stage:
            h = layer(h, temb) if isinstance(layer, ResBlock) else layer(h)
        return h

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        temb = self.time_mlp(timestep_embedding(t, self.base_channels))
        h = self.stem(x)
        skips = [h]
        for layer in self.down:
            h = self._run_stage(layer, h, temb) if isinstance(layer, nn.ModuleList) else layer(h)
            skips.append(h)
        h = self._run_stage(self.mid, h, temb)
        for layer in self.up:
            if isinstance(layer, nn.ModuleList):
                h = self._run_stage(layer, torch.cat([h, skips.pop()], dim=1), temb)
            else:
                h = layer(h)
        return self.head(h)
