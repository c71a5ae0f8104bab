"""Amortized Gaussian followed by inverse autoregressive flow layers (Kingma et al., 2016).

    z0 ~ N(mu(x), diag(sigma(x)^2)),   z = f_T o ... o f_1 (z0)

with f_t Pyro's ``affine_autoregressive`` transforms in their stable (sigmoid-gated)
form.  Sampling is one pass per layer and, because each transform caches the input
of the value it produced, ``log q(z|x)`` of a sample costs no inversion.  The flows
are shared by all x (not conditioned on x): the encoder's Gaussian carries the
amortization, the flows make its shape non-Gaussian.  There is no closed-form KL,
so the automatic ELBO choice is the Monte Carlo ``trace``.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro.distributions as dist
import torch
from pyro.distributions.transforms import affine_autoregressive
from torch import nn

from .base import GUIDES
from .gaussian import AmortizedGaussianGuide

__all__ = ["IAFGuide"]


class IAFGuide(AmortizedGaussianGuide):
    """q(z|x): the Gaussian encoder distribution pushed through ``flows`` IAF layers.

    Parameters
    ----------
    encoder : nn.Module
        Maps (..., D) to (..., 2 * latent_dim), as for the Gaussian guide.
    latent_dim : int
    flows : int
        Number of IAF layers; each draws a fresh random variable order (seeded by the run's
        seed and kept in the state dict as a buffer).
    flow_hidden : sequence of int
        Hidden sizes of each layer's autoregressive network (each >= latent_dim).
    """

    def __init__(
        self, encoder: nn.Module, latent_dim: int, flows: int = 2, flow_hidden: Sequence[int] = ()
    ):
        super().__init__(encoder)
        hidden = list(flow_hidden) or [2 * latent_dim]
        if min(hidden) < latent_dim:
            raise ValueError(f"guide.flow_hidden sizes must be >= latent_dim = {latent_dim}")
        self.flows = nn.ModuleList(
            affine_autoregressive(latent_dim, hidden_dims=hidden, stable=True) for _ in range(flows)
        )

    def posterior(self, x: torch.Tensor) -> dist.Distribution:
        """q(z | x) with batch shape x.shape[:-1] and event shape (latent_dim,)."""
        return dist.TransformedDistribution(super().posterior(x), list(self.flows))


GUIDES.register("iaf")(IAFGuide)
