"""Self-supervised learners around any backbone: BYOL, MoCo v3 and SimSiam (projector/predictor heads and losses).

    model = SSLModel(backbone, feature_dim=512, algorithm="byol")
    loss = model(view1, view2)               # online network learns; the teacher gets no gradient
    momentum_update(model, m)                # teacher <- m * teacher + (1 - m) * online  (BYOL, MoCo v3)

`model.online` (backbone + projector + predictor) is what the optimizer trains and what a weight-averaging method
averages; `model.teacher` (backbone + projector copies) is each algorithm's own momentum network, updated by
`momentum_update` (it is None for SimSiam, which uses a stop-gradient instead). Head shapes follow the papers:

* BYOL (Grill et al. 2020): projector and predictor Linear-BN-ReLU-Linear; loss 2 - 2 cos(p, z'), symmetrised;
  teacher momentum 0.996 -> 1 (cosine).
* MoCo v3 (Chen et al. 2021): 3-layer projector and 2-layer predictor, both ending in BN without affine; InfoNCE on
  the other view's teacher keys within the batch, scaled by 2 * temperature, symmetrised; momentum 0.99 -> 1 (cosine).
* SimSiam (Chen & He 2021): 3-layer projector (last BN no affine), bottleneck predictor; loss -cos(p, stopgrad(z)).

The hidden widths are arguments (the papers use 4096/2048; the CPU profile uses 512).
"""

from __future__ import annotations

import copy
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

ALGORITHMS = ("byol", "mocov3", "simsiam")
DEFAULT_MOMENTUM = {"byol": 0.996, "mocov3": 0.99}  # teacher momentum at step 0 in each paper


def mlp(dims: list[int], last_norm: str = "none") -> nn.Sequential:
    """Linear-BN-ReLU blocks through `dims`; the last Linear is followed by nothing, BN, or BN without affine."""
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        last = i == len(dims) - 2
        layers.append(nn.Linear(d_in, d_out, bias=last and last_norm == "none"))
        if not last:
            layers += [nn.BatchNorm1d(d_out), nn.ReLU(inplace=True)]
        elif last_norm != "none":
            layers.append(nn.BatchNorm1d(d_out, affine=last_norm == "bn"))
    return nn.Sequential(*layers)


def build_heads(algorithm: str, feature_dim: int, hidden_dim: int, out_dim: int) -> tuple[nn.Module, nn.Module]:
    """(projector, predictor) with each paper's depth and normalisation."""
    if algorithm == "byol":
        return mlp([feature_dim, hidden_dim, out_dim]), mlp([out_dim, hidden_dim, out_dim])
    if algorithm == "mocov3":
        projector = mlp([feature_dim, hidden_dim, hidden_dim, out_dim], last_norm="bn_no_affine")
        return projector, mlp([out_dim, hidden_dim, out_dim], last_norm="bn_no_affine")
    if algorithm == "simsiam":
        projector = mlp([feature_dim, out_dim, out_dim, out_dim], last_norm="bn_no_affine")
        return projector, mlp([out_dim, max(out_dim // 4, 1), out_dim])  # bottleneck predictor (2048 -> 512)
    raise ValueError(f"algorithm={algorithm!r} is not allowed; choose one of: {', '.join(ALGORITHMS)}")


class OnlineNetwork(nn.Module):
    """The trained network: backbone -> projector -> predictor."""

    def __init__(self, backbone: nn.Module, projector: nn.Module, predictor: nn.Module):
        super().__init__()
        self.backbone, self.projector, self.predictor = backbone, projector, predictor

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(projection z, prediction p)."""
        z = self.projector(self.backbone(x))
        return z, self.predictor(z)


class TeacherNetwork(nn.Module):
    """The momentum network: copies of the online backbone and projector, never trained by gradients."""

    def __init__(self, online: OnlineNetwork):
        super().__init__()
        self.backbone = copy.deepcopy(online.backbone)
        self.projector = copy.deepcopy(online.projector)
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.backbone(x))


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of 2 - 2 cos(p, z) (the normalised squared distance)."""
    return (2 - 2 * F.cosine_similarity(p, z.detach(), dim=-1)).mean()


def moco_v3_loss(q: torch.Tensor, k: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE of queries against the batch's keys (positive = same index), times 2 * temperature as in MoCo v3."""
    q, k = F.normalize(q, dim=1), F.normalize(k.detach(), dim=1)
    logits = q @ k.t() / temperature
    return 2 * temperature * F.cross_entropy(logits, torch.arange(len(q), device=q.device))


def simsiam_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -cos(p, stopgrad(z))."""
    return -F.cosine_similarity(p, z.detach(), dim=-1).mean()


class SSLModel(nn.Module):
    """Online network + (for BYOL and MoCo v3) a momentum teacher; `forward` returns backbone features."""

    def __init__(
        self, backbone: nn.Module, feature_dim: int, algorithm: str = "byol", hidden_dim: int = 4096,
        out_dim: int = 256, temperature: float = 1.0,
    ):
        super().__init__()
        projector, predictor = build_heads(algorithm, feature_dim, hidden_dim, out_dim)
        self.algorithm, self.temperature = algorithm, temperature
        self.online = OnlineNetwork(backbone, projector, predictor)
        self.teacher: Optional[TeacherNetwork] = TeacherNetwork(self.online) if algorithm != "simsiam" else None

    def forward(self, view1: torch.Tensor, view2: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Backbone features of `view1`; with two views, the training loss (through forward, so DDP and
        torch.compile wrappers see it)."""
        if view2 is None:
            return self.online.backbone(view1)
        return self.loss(view1, view2)

    def loss(self, view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
        """The symmetrised loss of the two augmented views (each view through each branch separately, per-view BN)."""
        z1, p1 = self.online(view1)
        z2, p2 = self.online(view2)
        if self.algorithm == "simsiam":
            return 0.5 * (simsiam_loss(p1, z2) + simsiam_loss(p2, z1))
        with torch.no_grad():
            t1, t2 = self.teacher(view1), self.teacher(view2)
        if self.algorithm == "byol":
            return byol_loss(p1, t2) + byol_loss(p2, t1)
        return moco_v3_loss(p1, t2, self.temperature) + moco_v3_loss(p2, t1, self.temperature)

    def teacher_pairs(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Matching (teacher, online) parameter lists over backbone + projector."""
        teacher = [*self.teacher.backbone.parameters(), *self.teacher.projector.parameters()]
        online = [*self.online.backbone.parameters(), *self.online.projector.parameters()]
        return teacher, online


def cosine_momentum(base: float, step: int, total_steps: int) -> float:
    """BYOL's schedule: 1 - (1 - base) * (cos(pi * step / total) + 1) / 2, rising from base to 1; 1 after the end."""
    if total_steps <= 0:
        return base
    progress = min(max(step, 0), total_steps) / total_steps
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1.0) / 2.0


@torch.no_grad()
def momentum_update(model: SSLModel, momentum: float) -> None:
    """teacher <- momentum * teacher + (1 - momentum) * online, parameters only (the teacher keeps its BN stats)."""
    teacher, online = model.teacher_pairs()
    torch._foreach_lerp_(teacher, online, 1.0 - momentum)


@torch.no_grad()
def copy_online_to_teacher(model: SSLModel) -> None:
    """teacher <- online exactly (parameters and buffers): the switch of the official openmixup SSL code."""
    model.teacher.backbone.load_state_dict(model.online.backbone.state_dict())
    model.teacher.projector.load_state_dict(model.online.projector.state_dict())
