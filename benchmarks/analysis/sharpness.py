"""Epsilon-sharpness: the largest loss increase found within an L2 ball of radius rho around the weights.

    S(w, rho) = max_{||d|| <= rho} L(w + d) - L(w)

(Keskar et al. 2017 use a box and a relative increase; this is the L2-ball form that SAM optimises.) The maximum is
searched by projected, normalised gradient ascent from a seeded random point on the sphere:

    d <- proj_{||d|| <= rho}( d + step * rho * grad L(w + d) / ||grad L(w + d)|| )

and the largest increase seen at any iterate is returned. Every iterate lies in the ball, so the result is a lower
bound on S that tightens with more steps. At a minimum of a quadratic, S = rho^2 * lambda_max / 2, and the ascent is
a power iteration on (I + c H), so it converges to the top eigen-direction. The ball is in raw parameter space over
`params` (the trainable parameters by default), so compare values between weights of the same architecture only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import nn

from benchmarks.analysis.hessian import (
    Batch,
    LossFn,
    Vector,
    loss_and_gradient,
    mean_loss,
    norm,
    scaled,
    trainable_params,
)


@dataclass
class SharpnessResult:
    rho: float  # radius of the L2 ball
    increase: float  # largest L(w + d) - L(w) found
    base_loss: float  # L(w)
    perturbed_loss: float  # L(w + d) at the best d found
    history: list[float]  # L(w + d) - L(w) at each iterate


def _shift(params: Sequence[torch.Tensor], origin: Vector, offset: Vector) -> None:
    with torch.no_grad():
        for p, w, d in zip(params, origin, offset):
            p.copy_(w + d)


def epsilon_sharpness(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Sequence[Batch],
    rho: float,
    params: Optional[Sequence[torch.Tensor]] = None,
    steps: int = 5,
    step_size: float = 1.0,
    seed: int = 0,
) -> SharpnessResult:
    """S(w, rho) by `steps` gradient evaluations plus one forward pass; the weights are restored afterwards.

    `step_size` is the ascent step as a fraction of rho. The loss RNG is reseeded per batch with `seed` (see
    hessian.py), the random start uses its own generator seeded with `seed`.
    """
    if rho <= 0:
        raise ValueError(f"rho must be > 0, got {rho}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    params = list(params) if params is not None else trainable_params(model)
    origin = [p.detach().clone() for p in params]
    base = mean_loss(model, loss_fn, batches, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    offset = [torch.randn(p.shape, generator=generator).to(p) for p in params]
    offset = scaled(offset, rho / norm(offset))
    history: list[float] = []
    best_increase, best_loss = float("-inf"), base
    try:
        for step in range(steps + 1):
            _shift(params, origin, offset)
            if step < steps:
                loss, grad = loss_and_gradient(model, loss_fn, batches, params, seed=seed)
            else:
                loss = mean_loss(model, loss_fn, batches, seed=seed)  # the last iterate needs no gradient
            history.append(loss - base)
            if loss - base > best_increase:
                best_increase, best_loss = loss - base, loss
            if step == steps:
                break
            grad_norm = norm(grad)
            if float(grad_norm) == 0.0:
                break  # a flat spot of the ball: no ascent direction left
            offset = [d + g * (step_size * rho / grad_norm) for d, g in zip(offset, grad)]
            length = norm(offset)
            if length > rho:
                offset = scaled(offset, rho / length)
    finally:
        _shift(params, origin, [torch.zeros_like(w) for w in origin])
    return SharpnessResult(
        rho=rho, increase=best_increase, base_loss=base, perturbed_loss=best_loss, history=history
    )
