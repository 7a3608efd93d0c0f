"""Curvature of a loss at given weights: the ends of the Hessian's spectrum (Lanczos; or the largest-magnitude
eigenvalue by power iteration) and its trace (Hutchinson).

Everything here works on any `nn.Module` and any `loss_fn(model, batch) -> scalar` over a fixed list of batches.
The measured function is the mean of the per-batch losses (every batch weighs the same):

    L(w) = (1 / B) * sum_b loss_fn(model_w, batch_b)

Only the Hessian with respect to `params` (by default the module's trainable parameters) is used; it is never built:
we only need Hessian-vector products, from double backward (Pearlmutter's trick through autograd).

To make L a fixed function of the weights, `mean_loss` and `hessian_vector_product` reseed torch's global RNG before
each batch (`seed + batch index`), so a loss that draws random numbers (noise levels, masks, proposal sampling) draws
the same ones at every evaluation. Putting BatchNorm and dropout in eval mode is the caller's job (see
`loading.freeze_stochastic_layers`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
from torch import nn

Batch = object
LossFn = Callable[[nn.Module, Batch], torch.Tensor]
Vector = list[torch.Tensor]  # one tensor per parameter, same shapes: a point or a direction in weight space


def trainable_params(module: nn.Module) -> list[nn.Parameter]:
    """The parameters the analysis differentiates and perturbs: those with requires_grad."""
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the module has no trainable parameters (requires_grad=True); nothing to analyse")
    return params


def dot(a: Vector, b: Vector) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a, b))


def norm(a: Vector) -> torch.Tensor:
    return dot(a, a).sqrt()


def scaled(a: Vector, factor: float | torch.Tensor) -> Vector:
    return [x * factor for x in a]


def _check_batches(batches: Sequence[Batch]) -> None:
    if len(batches) == 0:
        raise ValueError("batches is empty; the analysis needs at least one batch")


def mean_loss(model: nn.Module, loss_fn: LossFn, batches: Sequence[Batch], seed: int = 0) -> float:
    """L(w) at the model's current weights, without building a graph."""
    _check_batches(batches)
    total = 0.0
    with torch.no_grad():
        for index, batch in enumerate(batches):
            torch.manual_seed(seed + index)
            total += float(loss_fn(model, batch))
    return total / len(batches)


def loss_and_gradient(
    model: nn.Module, loss_fn: LossFn, batches: Sequence[Batch], params: Sequence[torch.Tensor], seed: int = 0
) -> tuple[float, Vector]:
    """L(w) and its gradient with respect to `params` (zeros for parameters the loss does not use)."""
    _check_batches(batches)
    total = 0.0
    grad = [torch.zeros_like(p) for p in params]
    for index, batch in enumerate(batches):
        torch.manual_seed(seed + index)
        loss = loss_fn(model, batch)
        parts = torch.autograd.grad(loss, params, allow_unused=True)
        total += float(loss.detach())
        for acc, part in zip(grad, parts):
            if part is not None:
                acc.add_(part.detach())
    return total / len(batches), scaled(grad, 1.0 / len(batches))


def hessian_vector_product(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Sequence[Batch],
    params: Sequence[torch.Tensor],
    vector: Vector,
    seed: int = 0,
) -> Vector:
    """H v for the Hessian H of L at the current weights: grad of (grad L . v), one batch at a time."""
    _check_batches(batches)
    product = [torch.zeros_like(p) for p in params]
    for index, batch in enumerate(batches):
        torch.manual_seed(seed + index)
        loss = loss_fn(model, batch)
        grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
        pairs = [(g, v) for g, v in zip(grads, vector) if g is not None]
        grad_dot_v = sum((g * v).sum() for g, v in pairs)
        if not torch.is_tensor(grad_dot_v) or not grad_dot_v.requires_grad:
            continue  # the loss is at most linear in params on this batch: its Hessian is zero
        parts = torch.autograd.grad(grad_dot_v, params, allow_unused=True)
        for acc, part in zip(product, parts):
            if part is not None:
                acc.add_(part.detach())
    return scaled(product, 1.0 / len(batches))


@dataclass
class EigenResult:
    eigenvalue: float  # the power-iteration estimate (Rayleigh quotient v.Hv of the last unit vector)
    iterations: int  # Hessian-vector products used
    converged: bool  # the relative change of the estimate fell below the tolerance
    history: list[float]  # the estimate after each iteration


def top_hessian_eigenvalue(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Sequence[Batch],
    params: Optional[Sequence[torch.Tensor]] = None,
    iterations: int = 20,
    tolerance: float = 1e-3,
    seed: int = 0,
) -> EigenResult:
    """The Hessian eigenvalue of largest magnitude, by power iteration from a seeded Gaussian start.

    At a trained minimum the Hessian is (nearly) positive semi-definite, so this is the top eigenvalue, the usual
    sharpness measure. Where a negative eigenvalue has the larger magnitude, that one is returned (negative):
    it is what power iteration converges to.
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    params = list(params) if params is not None else trainable_params(model)
    generator = torch.Generator().manual_seed(seed)
    vector = [torch.randn(p.shape, generator=generator).to(p) for p in params]
    vector = scaled(vector, 1.0 / norm(vector))
    history: list[float] = []
    converged = False
    for _ in range(iterations):
        product = hessian_vector_product(model, loss_fn, batches, params, vector, seed=seed)
        history.append(float(dot(vector, product)))
        length = norm(product)
        if float(length) == 0.0:
            converged = True  # H v = 0: v is in the null space and every eigenvalue seen is 0
            break
        vector = scaled(product, 1.0 / length)
        if len(history) > 1 and abs(history[-1] - history[-2]) <= tolerance * abs(history[-1]):
            converged = True
            break
    return EigenResult(eigenvalue=history[-1], iterations=len(history), converged=converged, history=history)


@dataclass
class SpectrumEnds:
    top: float  # the largest (algebraic) eigenvalue: the sharpest upward curvature, the usual sharpness measure
    bottom: float  # the smallest eigenvalue: negative where the weights are not at a minimum (a saddle, a slope)
    products: int  # Hessian-vector products used
    converged: bool  # ARPACK met its tolerance for both ends within the budget


def hessian_spectrum_ends(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Sequence[Batch],
    params: Optional[Sequence[torch.Tensor]] = None,
    max_products: int = 200,
    tolerance: float = 1e-3,
    seed: int = 0,
) -> SpectrumEnds:
    """Both ends of the Hessian's spectrum, by implicitly restarted Lanczos (scipy's ARPACK, `eigsh(which="BE")`).

    Power iteration returns the eigenvalue of largest *magnitude* and converges at the rate |lambda_2 / lambda_1|:
    where the Hessian is indefinite with ends of similar size (weights short of a minimum: lambda_max = 6,
    lambda_min = -5), it alternates between them and its sign flips from seed to seed. Lanczos finds the largest
    and the smallest eigenvalue together, each to `tolerance` (relative, ARPACK's tol), from a seeded Gaussian
    start; `max_products` bounds the Hessian-vector products (to about a basis: ARPACK's restarts stop there and the Ritz values
    reached so far are returned, `converged` False). Computed in float64 on the host; the products themselves run
    where the model is.
    """
    import numpy as np
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

    if max_products < 1:
        raise ValueError(f"max_products must be >= 1, got {max_products}")
    params = list(params) if params is not None else trainable_params(model)
    sizes = [p.numel() for p in params]
    n = sum(sizes)
    products = 0

    def matvec(flat: np.ndarray) -> np.ndarray:
        nonlocal products
        products += 1
        pieces = torch.from_numpy(np.ascontiguousarray(flat, dtype=np.float64).ravel()).split(sizes)
        vector = [piece.view(p.shape).to(p) for piece, p in zip(pieces, params)]
        product = hessian_vector_product(model, loss_fn, batches, params, vector, seed=seed)
        return torch.cat([x.detach().double().flatten().cpu() for x in product]).numpy()

    if n <= 2:  # ARPACK needs k < n: build the (at most 2 x 2) Hessian column by column
        dense = np.stack([matvec(column) for column in np.eye(n)], axis=1)
        values = np.linalg.eigvalsh((dense + dense.T) / 2)
        return SpectrumEnds(float(values[-1]), float(values[0]), products, True)
    start = torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).numpy()
    vectors = min(n, 20)  # Lanczos basis size (ARPACK's ncv)
    operator = LinearOperator((n, n), matvec=matvec, dtype=np.float64)
    try:
        values = eigsh(operator, k=2, which="BE", v0=start, ncv=vectors, tol=tolerance,
                       maxiter=max(1, max_products // vectors), return_eigenvectors=False)
        converged = True
    except ArpackNoConvergence as stopped:
        values, converged = stopped.eigenvalues, False
        if len(values) < 2:  # no end converged: the extreme Ritz values of the last basis are the best estimate
            raise RuntimeError(
                f"Lanczos found neither end of the Hessian's spectrum within {products} Hessian-vector products; "
                "raise max_products (sema-analyze --lanczos-products) or use --eigen-solver power") from stopped
    values = sorted(float(v) for v in values)
    return SpectrumEnds(values[-1], values[0], products, converged)


@dataclass
class TraceResult:
    trace: float  # mean of the probe estimates z.Hz
    standard_error: float  # std of the probe estimates / sqrt(probes); 0 for a single probe
    probes: int  # number of Rademacher probes


def hutchinson_trace(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Sequence[Batch],
    params: Optional[Sequence[torch.Tensor]] = None,
    probes: int = 10,
    seed: int = 0,
) -> TraceResult:
    """tr(H) ~ mean over probes of z.Hz with Rademacher z (+-1 entries), whose expectation is exactly tr(H).

    Its variance per probe is 2 * sum_{i != j} H_ij^2: exact for a diagonal Hessian, noisy when the off-diagonal
    mass is large, so report the standard error with it.
    """
    if probes < 1:
        raise ValueError(f"probes must be >= 1, got {probes}")
    params = list(params) if params is not None else trainable_params(model)
    generator = torch.Generator().manual_seed(seed)
    estimates = []
    for _ in range(probes):
        probe = [(torch.randint(0, 2, p.shape, generator=generator) * 2 - 1).to(p) for p in params]
        product = hessian_vector_product(model, loss_fn, batches, params, probe, seed=seed)
        estimates.append(float(dot(probe, product)))
    values = torch.tensor(estimates, dtype=torch.float64)
    error = float(values.std() / probes**0.5) if probes > 1 else 0.0
    return TraceResult(trace=float(values.mean()), standard_error=error, probes=probes)
