"""The variational autoencoder's generative model p(z) p(x | z) as a Pyro model.

    z ~ prior                         (B, latent_dim)
    x | z ~ likelihood(decoder(z))    (B, D)

inside ``pyro.plate("data", n, subsample_size=B)``, so a batch of B out of n
examples gives an ELBO estimate scaled to the full data set (factor n / B).
"""

from __future__ import annotations

import pyro
import torch
from torch import nn

__all__ = ["VAE"]


class VAE(nn.Module):
    """p(x, z) = p(z) p(x | z) with a neural decoder; ``forward`` is the Pyro model.

    Parameters
    ----------
    prior : nn.Module
        ``prior()`` is a distribution with event shape (latent_dim,).
    decoder : nn.Module
        Maps (..., latent_dim) to the likelihood's parameters (..., F).
    likelihood : nn.Module
        ``likelihood(decoder(z))`` is a distribution with event shape (D,).
    """

    def __init__(self, prior: nn.Module, decoder: nn.Module, likelihood: nn.Module):
        super().__init__()
        self.prior = prior
        self.decoder = decoder
        self.likelihood = likelihood

    def forward(self, x: torch.Tensor | None = None, *, n: int | None = None) -> torch.Tensor:
        """Run the model.

        Parameters
        ----------
        x : (B, D) tensor or None
            Observed batch; ``None`` generates ``n`` new examples.
        n : int, optional
            Size of the full data set that ``x`` is a mini-batch of (default B).

        Returns
        -------
        (B, D) tensor: the observed or generated x.
        """
        pyro.module("vae", self)
        if x is None and n is None:
            raise ValueError("give the data x or the number n of examples to generate")
        batch = n if x is None else x.shape[0]
        with pyro.plate("data", size=n or batch, subsample_size=batch):
            z = pyro.sample("z", self.prior())
            return pyro.sample("x", self.likelihood(self.decoder(z)), obs=x)

    @torch.no_grad()
    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        """E[x | z], shape (..., D), for z of shape (..., latent_dim): pixel probabilities."""
        return self.likelihood(self.decoder(z)).mean

    @torch.no_grad()
    def sample_means(self, num_samples: int) -> torch.Tensor:
        """E[x | z] for ``num_samples`` draws z ~ p(z): shape (num_samples, D)."""
        z = self.prior().sample((num_samples,))
        return self.decode_mean(z)
