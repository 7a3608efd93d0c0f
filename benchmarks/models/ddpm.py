"""DDPM (Ho et al. 2020): the linear-beta noise schedule, the eps-prediction loss and a seeded sampler.

    beta_t = linspace(beta_1, beta_T, T),  alpha_bar_t = prod_{s <= t} (1 - beta_s)
    x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps,       loss = || eps - eps_theta(x_t, t) ||^2

`sample` walks a subsequence of the T timesteps (DDIM's generalised update, Song et al. 2021). With all T
steps and eta = 1 it is exactly DDPM's ancestral sampler (variance beta_tilde); fewer steps make evaluation
affordable on a CPU. Timesteps are 0-based here (t = 0 .. T-1).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


class Diffusion:
    """The fixed forward process; holds no trainable state (so weight averaging never touches it)."""

    def __init__(self, timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        if not (0 < beta_start < beta_end < 1):
            raise ValueError(f"need 0 < beta_start < beta_end < 1, got {beta_start}, {beta_end}")
        self.timesteps = timesteps
        self.betas = torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
        self.alpha_bars = torch.cumprod(1.0 - self.betas, dim=0)

    def _coef(self, values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return values.to(like.device)[t].to(like.dtype).view(-1, *([1] * (like.ndim - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t given x_0: sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) noise."""
        a = self._coef(self.alpha_bars, t, x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def loss(
        self,
        model: nn.Module,
        x0: torch.Tensor,
        t: Optional[torch.Tensor] = None,
        noise: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Mean squared error of the predicted noise (DDPM's L_simple); t and noise drawn when not given."""
        if t is None:
            t = torch.randint(0, self.timesteps, (x0.shape[0],), device=x0.device)
        if noise is None:
            noise = torch.randn_like(x0)
        return F.mse_loss(model(self.q_sample(x0, t, noise), t), noise)

    @torch.no_grad()
    def sample(
        self,
        model: nn.Module,
        shape: tuple[int, ...],
        generator: torch.Generator,
        steps: Optional[int] = None,
        eta: float = 1.0,
        device: Optional[torch.device] = None,
    ) -> torch.Tensor:
        """Images in [-1, 1] from noise drawn with `generator` (on the CPU: samples match across devices)."""
        device = device or next(model.parameters()).device
        steps = steps or self.timesteps
        if not 1 <= steps <= self.timesteps:
            raise ValueError(f"sampling steps must lie in [1, {self.timesteps}], got {steps}")
        # Evenly spaced timesteps from T-1 down to 0.
        sequence = torch.linspace(self.timesteps - 1, 0, steps).round().long().tolist()
        x = torch.randn(shape, generator=generator).to(device)
        for i, t in enumerate(sequence):
            t_prev = sequence[i + 1] if i + 1 < len(sequence) else -1
            a_t = float(self.alpha_bars[t])
            a_prev = float(self.alpha_bars[t_prev]) if t_prev >= 0 else 1.0
            eps = model(x, torch.full((shape[0],), t, device=device, dtype=torch.long)).float()
            x0 = ((x - (1 - a_t) ** 0.5 * eps) / a_t**0.5).clamp(-1, 1)
            # DDIM's sigma; with eta=1 and consecutive steps it equals DDPM's beta_tilde_t.
            sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)) ** 0.5
            eps = (x - a_t**0.5 * x0) / (1 - a_t) ** 0.5  # the noise consistent with the clipped x0
            x = a_prev**0.5 * x0 + max(1 - a_prev - sigma**2, 0.0) ** 0.5 * eps
            if t_prev >= 0 and sigma > 0:
                x = x + sigma * torch.randn(shape, generator=generator).to(device)
        return x
