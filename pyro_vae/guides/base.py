"""The guide registry and the one thing every amortized guide does: sample z ~ q(z | x)
inside the data plate."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ..registry import Registry

__all__ = ["GUIDES", "AmortizedGuide"]

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
