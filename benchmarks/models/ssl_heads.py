"""Self-supervised learners around any backbone: BYOL, MoCo v2, MoCo v3 and SimSiam (heads and losses).

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
* MoCo v2 (Chen et al. 2020): 2-layer projector Linear-ReLU-Linear (with biases, no BN), no predictor; InfoNCE
  of the first view's queries against the second view's teacher key (positive) and a queue of `queue_size` past keys
  (negatives), temperature 0.2, not symmetrised; each step's keys (gathered from every rank) replace the oldest
  queue entries; constant teacher momentum 0.999.
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

ALGORITHMS = ("byol", "mocov2", "mocov3", "simsiam")
DEFAULT_MOMENTUM = {"byol": 0.996, "mocov2": 0.999, "mocov3": 0.99}  # teacher momentum at step 0 in each paper
DEFAULT_SCHEDULE = {"byol": "cosine", "mocov2": "constant", "mocov3": "cosine"}  # each paper's momentum schedule
DEFAULT_TEMPERATURE = {"mocov2": 0.2, "mocov3": 1.0}  # InfoNCE temperatures (MoCo v3: 1.0 for ResNets)


def mlp(dims: list[int], last_norm: str = "none", norm: bool = True) -> nn.Sequential:
    """Linear-BN-ReLU blocks through `dims` (Linear-ReLU with biases when not `norm`); the last Linear is followed by
    nothing, BN, or BN without affine."""
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        last = i == len(dims) - 2
        layers.append(nn.Linear(d_in, d_out, bias=not norm or (last and last_norm == "none")))
        if not last:
            layers += [nn.BatchNorm1d(d_out), nn.ReLU(inplace=True)] if norm else [nn.ReLU(inplace=True)]
        elif last_norm != "none":
            layers.append(nn.BatchNorm1d(d_out, affine=last_norm == "bn"))
    return nn.Sequential(*layers)


def build_heads(algorithm: str, feature_dim: int, hidden_dim: int, out_dim: int) -> tuple[nn.Module, nn.Module]:
    """(projector, predictor) with each paper's depth and normalisation."""
    if algorithm == "byol":
        return mlp([feature_dim, hidden_dim, out_dim]), mlp([out_dim, hidden_dim, out_dim])
    if algorithm == "mocov2":
        return mlp([feature_dim, hidden_dim, out_dim], norm=False), nn.Identity()
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


def moco_v2_loss(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE: for each query the logits [q.k, q.queue_1, ..., q.queue_K] / temperature, label 0 (its own key);
    q, k are L2-normalised here, the queue holds normalised keys."""
    q, k = F.normalize(q, dim=1), F.normalize(k.detach(), dim=1)
    positive = (q * k).sum(dim=1, keepdim=True)
    negatives = q @ queue.detach().clone().t().to(q.dtype)  # a copy: the queue is updated in place after the loss
    logits = torch.cat([positive, negatives], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


def gather_keys(k: torch.Tensor) -> torch.Tensor:
    """The keys of every rank, concatenated in rank order (the step's keys alone without torch.distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return k
    parts = [torch.empty_like(k) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, k.contiguous())
    return torch.cat(parts)


def simsiam_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -cos(p, stopgrad(z))."""
    return -F.cosine_similarity(p, z.detach(), dim=-1).mean()


class SSLModel(nn.Module):
    """Online network + (for BYOL and MoCo v3) a momentum teacher; `forward` returns backbone features."""

    def __init__(
        self, backbone: nn.Module, feature_dim: int, algorithm: str = "byol", hidden_dim: int = 4096,
        out_dim: int = 256, temperature: Optional[float] = None, queue_size: int = 65536,
    ):
        super().__init__()
        projector, predictor = build_heads(algorithm, feature_dim, hidden_dim, out_dim)
        self.algorithm = algorithm
        self.temperature = DEFAULT_TEMPERATURE.get(algorithm, 1.0) if temperature is None else temperature
        self.online = OnlineNetwork(backbone, projector, predictor)
        self.teacher: Optional[TeacherNetwork] = TeacherNetwork(self.online) if algorithm != "simsiam" else None
        if algorithm == "mocov2":  # MoCo v2's negatives: normalised random keys at first, then the past keys
            self.register_buffer("queue", F.normalize(torch.randn(queue_size, out_dim), dim=1))
            self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def forward(self, view1: torch.Tensor, view2: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Backbone features of `view1`; with two views, the training loss (through forward, so DDP and
        torch.compile wrappers see it)."""
        if view2 is None:
            return self.online.backbone(view1)
        return self.loss(view1, view2)

    def loss(self, view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
        """The symmetrised loss of the two augmented views (each view through each branch separately, per-view BN)."""
        if self.algorithm == "mocov2":  # not symmetrised: queries from view 1, keys from view 2
            with torch.no_grad():
                k = self.teacher(view2)
            loss = moco_v2_loss(self.online(view1)[1], k, self.queue, self.temperature)
            self.enqueue(F.normalize(k.float(), dim=1))
            return loss
        z1, p1 = self.online(view1)
        z2, p2 = self.online(view2)
        if self.algorithm == "simsiam":
            return 0.5 * (simsiam_loss(p1, z2) + simsiam_loss(p2, z1))
        with torch.no_grad():
            t1, t2 = self.teacher(view1), self.teacher(view2)
        if self.algorithm == "byol":
            return byol_loss(p1, t2) + byol_loss(p2, t1)
        return moco_v3_loss(p1, t2, self.temperature) + moco_v3_loss(p2, t1, self.temperature)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """MoCo v2: every rank's `keys` replace the oldest entries of the queue (a ring buffer of queue_size)."""
        keys = gather_keys(keys)
        size = len(self.queue)
        index = (self.queue_ptr + torch.arange(len(keys), device=keys.device)) % size
        self.queue.index_copy_(0, index[-size:], keys[-size:].to(self.queue.dtype))
        self.queue_ptr.copy_((self.queue_ptr + len(keys)) % size)

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
