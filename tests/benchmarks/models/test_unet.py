"""The DDPM U-Net: shapes, time conditioning, and the sizes the configs promise."""

from __future__ import annotations

import torch

from benchmarks.models.unet import UNet, timestep_embedding
from benchmarks.tasks.generation import UNETS


def test_timestep_embedding_is_sin_then_cos_of_scaled_steps():
    emb = timestep_embedding(torch.tensor([0, 3]), 4)
    # frequencies for dim 4: exp(-ln(1e4) * [0, 1] / 2) = [1, 0.01]
    expected = torch.tensor(
        [
            [0.0, 0.0, 1.0, 1.0],
            [
                torch.sin(torch.tensor(3.0)),
                torch.sin(torch.tensor(0.03)),
                torch.cos(torch.tensor(3.0)),
                torch.cos(torch.tensor(0.03)),
            ],
        ]
    )
    assert torch.allclose(emb, expected, atol=1e-6)


def test_unet_keeps_the_image_shape_and_depends_on_the_timestep():
    torch.manual_seed(0)
    net = UNet(in_channels=3, **UNETS["unet-tiny"]).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a, b = net(x, torch.tensor([0, 0])), net(x, torch.tensor([500, 500]))
    assert a.shape == x.shape and not torch.allclose(a, b)


def test_ddpm_cifar_network_has_ddpms_parameter_count():
    net = UNet(in_channels=3, **UNETS["unet-ddpm"])
    # Ho et al. report 35.7M parameters for their CIFAR-10 model
    assert abs(sum(p.numel() for p in net.parameters()) / 1e6 - 35.7) < 0.2
