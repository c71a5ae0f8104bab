"""Amortized diagonal Gaussian q(z|x) = N(mu(x), diag(sigma(x)^2)); (mu, log sigma) = encoder(x)."""

from __future__ import annotations

import pyro.distributions as dist
import torch

from .base import GUIDES, AmortizedGuide

__all__ = ["AmortizedGaussianGuide"]


class AmortizedGaussianGuide(AmortizedGuide):
    """The VAE's encoder distribution: z = y1 + exp(y2) * u with (y1, y2) = encoder(x), u ~ N(0, I).

    Parameters
    ----------
    encoder : nn.Module
        Maps (..., D) to (..., 2 * latent_dim): the mean y1 and the log-scale y2.
    """

    @staticmethod
    def encoder_features(latent_dim: int) -> int:
        return 2 * latent_dim

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loc, scale), each (..., latent_dim), for x of shape (..., D)."""
        loc, log_scale = self.encoder(x).chunk(2, dim=-1)
        return loc, log_scale.exp()

    def posterior(self, x: torch.Tensor) -> dist.Distribution:
        """q(z | x) with batch shape x.shape[:-1] and event shape (latent_dim,)."""
        return dist.Normal(*self.encode(x)).to_event(1)


GUIDES.register("gaussian")(AmortizedGaussianGuide)
