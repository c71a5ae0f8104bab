"""Priors p(z) over the latent code, chosen by name.

A prior is an ``nn.Module`` whose ``forward()`` returns a distribution with event
shape (latent_dim,) and empty batch shape; the model's data plate broadcasts it.
Learnable priors keep their parameters as module parameters, so ``fit`` trains them.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn

from .registry import Registry

__all__ = ["PRIORS", "StandardNormalPrior"]

PRIORS = Registry("prior")


class StandardNormalPrior(nn.Module):
    """p(z) = N(0, I) in ``latent_dim`` dimensions."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self) -> dist.Distribution:
        return dist.Normal(self.loc, self.scale).to_event(1)


PRIORS.register("normal")(StandardNormalPrior)
