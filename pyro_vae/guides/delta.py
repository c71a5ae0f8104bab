"""Deterministic encoder q(z|x) = delta(z - f(x)): the autoencoder, or MAP, limit of the VAE.

With a point mass the ELBO has no entropy term: E_q[log p(x, z) - log q(z|x)] is
log p(x, f(x)) = log p(x | z*) + log p(z*), a reconstruction term plus a penalty
log p(z*) on the code (an L2 penalty for the normal prior).  That is a joint
log-density at one point, not a bound on log p(x), and no importance-sampled
log p(x) exists (q has no density to divide by); :func:`pyro_vae.experiments.vae.evaluate_vae`
therefore reports the test "ELBO" as the joint log-density and the
log-likelihood as unavailable.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch

from .base import GUIDES, AmortizedGuide

__all__ = ["DeltaGuide"]


class DeltaGuide(AmortizedGuide):
    """q(z | x) = delta(z - encoder(x)).

    Parameters
    ----------
    encoder : nn.Module
        Maps (..., D) to the code (..., latent_dim).
    """

    point_mass = True  # read by the evaluation: no entropy, no importance-sampled log p(x)

    @staticmethod
    def encoder_features(latent_dim: int) -> int:
        return latent_dim

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(code, zeros), each (..., latent_dim): the point mass has scale 0."""
        loc = self.encoder(x)
        return loc, torch.zeros_like(loc)

    def posterior(self, x: torch.Tensor) -> dist.Distribution:
        """delta(z - encoder(x)) with batch shape x.shape[:-1] and event shape (latent_dim,)."""
        return dist.Delta(self.encoder(x), event_dim=1)


GUIDES.register("delta")(DeltaGuide)
