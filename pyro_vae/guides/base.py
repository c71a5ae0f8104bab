"""The guide registry and the one thing every amortized guide does: sample z ~ q(z | x)
inside the data plate."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ..registry import Registry

__all__ = ["ACTIVE_UNIT_THRESHOLD", "GUIDES", "AmortizedGuide", "active_units"]

GUIDES = Registry("guide")


class AmortizedGuide(nn.Module):
    """Base of the VAE's guides: subclasses define ``posterior(x)``, the distribution q(z | x).

    Parameters
    ----------
    encoder : nn.Module
        The network of x that ``posterior`` reads.
    """

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def posterior(self, x: torch.Tensor) -> dist.Distribution:
        """q(z | x) with batch shape x.shape[:-1] and event shape (latent_dim,)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, *, n: int | None = None) -> torch.Tensor:
        """Sample z (B, latent_dim) for the batch x (B, D) of a data set of size n."""
        pyro.module("guide", self)
        batch = x.shape[0]
        with pyro.plate("data", size=n or batch, subsample_size=batch):
            return pyro.sample("z", self.posterior(x))


# Burda et al. (2016): a unit is active when its posterior mean varies across the data
ACTIVE_UNIT_THRESHOLD = 0.01
# draws per example where q(z | x) has no closed-form mean (flows): noise variance <= 1e-3
_MEAN_DRAWS = 1000


@torch.no_grad()
def active_units(guide: AmortizedGuide, x: torch.Tensor, rows: int = 256) -> int:
    """A_u = #{u : Cov_x(E_q(z|x)[z_u]) > 0.01}, the latent dimensions the guide uses.

    ``x`` (N, D).  E_q[z | x] is the posterior's mean, or the average of 1000 draws
    where it has none; both taken ``rows`` examples at a time to bound memory.
    """
    means = []
    for chunk in x.split(rows):
        posterior = guide.posterior(chunk)
        try:
            means.append(posterior.mean)
        except NotImplementedError:
            means.append(posterior.sample((_MEAN_DRAWS,)).mean(0))
    return int((torch.cat(means).var(0) > ACTIVE_UNIT_THRESHOLD).sum())
