"""Shared fixtures for the sema-analyze tests: a quadratic loss with a Hessian known exactly."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn


class Point(nn.Module):
    """A model that is just a point x in R^n; the 'batches' are the matrices of the quadratic."""

    def __init__(self, x: torch.Tensor):
        super().__init__()
        self.x = nn.Parameter(x.clone().double())


def quadratic_loss(model: Point, matrix: torch.Tensor) -> torch.Tensor:
    """0.5 x^T A x: Hessian A (for symmetric A), gradient A x."""
    return 0.5 * model.x @ matrix @ model.x


def symmetric_with_eigenvalues(eigenvalues: list[float], seed: int = 0) -> torch.Tensor:
    """Q diag(eigenvalues) Q^T with a seeded random orthogonal Q."""
    generator = torch.Generator().manual_seed(seed)
    n = len(eigenvalues)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    return q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ q.T


@pytest.fixture
def quadratic():
    """The quadratic toolkit: `Point`, `loss` (0.5 x^T A x) and `symmetric` (A with given eigenvalues)."""
    return SimpleNamespace(Point=Point, loss=quadratic_loss, symmetric=symmetric_with_eigenvalues)


@pytest.fixture(autouse=True)
def _two_threads():
    torch.set_num_threads(2)
