"""A SimVP-style video prediction model (Gao et al. 2022; Tan et al. 2022 "SimVP v2"), written for this project.

Three parts, all convolutional, no recurrence:

* encoder: the same 2-D conv stack on every input frame ([B*T, C, H, W] -> [B*T, hid_S, H/4, W/4] with the default
  4 layers: stride 2 on layers 2 and 4);
* translator: the T frames' latents stacked along channels ([B, T*hid_S, h, w]) and mixed by `n_translator` blocks of
  gated spatial attention + convolutional MLP (the gSTA idea: large-kernel depthwise convs, a sigmoid gate);
* decoder: the mirror of the encoder (pixel-shuffle upsampling), with a skip from the encoder's first layer, then a
  1x1 read-out; it predicts as many frames as it is given ([B, T, C, H, W] -> [B, T, C, H, W]).

OpenSTL's Moving MNIST SimVP-gSTA setting is hid_S=64, hid_T=512, N_S=4, N_T=8 (`simvp_paper` below); the CPU
setting (`simvp_cpu`) shrinks the widths so a quick run trains in minutes on two cores.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class SimVPSize:
    """Widths and depths of one SimVP configuration."""

    hid_spatial: int  # channels of the per-frame encoder/decoder (OpenSTL's hid_S)
    hid_temporal: int  # channels inside the translator (hid_T)
    n_spatial: int  # encoder (and decoder) layers; every second one halves (doubles) the resolution (N_S)
    n_translator: int  # translator blocks (N_T)
    mlp_ratio: int = 4  # expansion of each translator block's conv MLP (OpenSTL's gSTA: 8)


SIZES = {
    "simvp_paper": SimVPSize(hid_spatial=64, hid_temporal=512, n_spatial=4, n_translator=8, mlp_ratio=8),
    "simvp_small": SimVPSize(hid_spatial=16, hid_temporal=128, n_spatial=4, n_translator=4),
    "simvp_cpu": SimVPSize(hid_spatial=8, hid_temporal=64, n_spatial=4, n_translator=2),
}


class ConvNormAct(nn.Module):
    """3x3 conv (stride 2 to downsample, or conv + pixel shuffle to upsample), GroupNorm(2), SiLU."""

    def __init__(self, c_in: int, c_out: int, resample: str = "none"):
        super().__init__()
        if resample == "up":
            self.conv = nn.Sequential(nn.Conv2d(c_in, c_out * 4, 3, padding=1), nn.PixelShuffle(2))
        else:
            self.conv = nn.Conv2d(c_in, c_out, 3, stride=2 if resample == "down" else 1, padding=1)
        self.norm = nn.GroupNorm(2, c_out)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


def _downsamples(n_layers: int) -> list[bool]:
    """Which encoder layers halve the resolution: every second one (layers 2, 4, ...), as in SimVP."""
    return [i % 2 == 1 for i in range(n_layers)]


class Encoder(nn.Module):
    def __init__(self, c_in: int, hid: int, n_layers: int):
        super().__init__()
        flags = _downsamples(n_layers)
        self.layers = nn.ModuleList(
            ConvNormAct(c_in if i == 0 else hid, hid, "down" if down else "none") for i, down in enumerate(flags)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = x = self.layers[0](x)
        for layer in self.layers[1:]:
            x = layer(x)
        return x, skip


class Decoder(nn.Module):
    def __init__(self, hid: int, c_out: int, n_layers: int):
        super().__init__()
        flags = list(reversed(_downsamples(n_layers)))
        self.layers = nn.ModuleList(ConvNormAct(hid, hid, "up" if up else "none") for up in flags)
        self.readout = nn.Conv2d(hid, c_out, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = layer(x)
        return self.readout(self.layers[-1](x + skip))


class GatedSpatialAttention(nn.Module):
    """Large receptive field at low cost: 5x5 depthwise, then 7x7 depthwise dilated by 3, gated by a sigmoid."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj_in = nn.Sequential(nn.Conv2d(dim, dim, 1), nn.GELU())
        self.local = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.dilated = nn.Conv2d(dim, dim, 7, padding=9, dilation=3, groups=dim)
        self.to_value_and_gate = nn.Conv2d(dim, 2 * dim, 1)
        self.proj_out = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj_in(x)
        value, gate = self.to_value_and_gate(self.dilated(self.local(h))).chunk(2, dim=1)
        return self.proj_out(torch.sigmoid(gate) * value)


class TranslatorBlock(nn.Module):
    """Pre-norm residual block: gated spatial attention, then a conv MLP (1x1 expand, 3x3 depthwise, 1x1)."""

    def __init__(self, dim: int, mlp_ratio: int = 4):
        super().__init__()
        self.norm1, self.norm2 = nn.BatchNorm2d(dim), nn.BatchNorm2d(dim)
        self.attention = GatedSpatialAttention(dim)
        hidden = dim * mlp_ratio
        self.mlp = nn.Sequential(
            nn.Conv2d(dim, hidden, 1), nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden), nn.GELU(),
            nn.Conv2d(hidden, dim, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Translator(nn.Module):
    """[B, T*hid_S, h, w] -> same shape, through `n_blocks` blocks at width hid_T (1x1 convs in and out)."""

    def __init__(self, c_in: int, hid: int, n_blocks: int, mlp_ratio: int = 4):
        super().__init__()
        self.reduce = nn.Conv2d(c_in, hid, 1)
        self.blocks = nn.Sequential(*(TranslatorBlock(hid, mlp_ratio) for _ in range(n_blocks)))
        self.expand = nn.Conv2d(hid, c_in, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand(self.blocks(self.reduce(x)))


class SimVP(nn.Module):
    """Predict the next T frames from T frames: [B, T, C, H, W] -> [B, T, C, H, W] (H, W divisible by 4)."""

    def __init__(self, n_frames: int, channels: int, size: SimVPSize):
        super().__init__()
        self.n_frames, self.channels = n_frames, channels
        self.encoder = Encoder(channels, size.hid_spatial, size.n_spatial)
        self.translator = Translator(n_frames * size.hid_spatial, size.hid_temporal, size.n_translator,
                                     size.mlp_ratio)
        self.decoder = Decoder(size.hid_spatial, channels, size.n_spatial)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = frames.shape
        if t != self.n_frames or c != self.channels:
            raise ValueError(f"SimVP built for {self.n_frames} frames x {self.channels} channels, got {t} x {c}")
        latent, skip = self.encoder(frames.reshape(b * t, c, h, w))
        _, hid, lh, lw = latent.shape
        mixed = self.translator(latent.reshape(b, t * hid, lh, lw)).reshape(b * t, hid, lh, lw)
        return self.decoder(mixed, skip).reshape(b, t, c, h, w)


def build_simvp(name: str, n_frames: int = 10, channels: int = 1) -> SimVP:
    """A SimVP of a named size (`SIZES`); unknown names list the allowed ones."""
    if name not in SIZES:
        raise ValueError(f"model={name!r} is not a SimVP size; choose one of: {', '.join(SIZES)}")
    return SimVP(n_frames, channels, SIZES[name])
