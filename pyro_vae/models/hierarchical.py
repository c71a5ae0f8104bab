"""A VAE with two stochastic layers (Burda, Grosse & Salakhutdinov, 2016) as a Pyro model.

    z2 ~ p(z2)                                   (B, d2), N(0, I)
    z1 | z2 ~ N(mu(z2), diag(sigma(z2)^2))       (B, d1), (mu, log sigma) = between(z2)
    x | z1 ~ likelihood(decoder(z1))             (B, D)

inside ``pyro.plate("data", n, subsample_size=B)``, so a batch of B out of n examples gives
an ELBO estimate scaled to the full data set (factor n / B), like :class:`~.vae.VAE`.  Every
latent site is local to its data point, so the per-point bounds (``iwae``, ``renyi``) and the
importance-sampled log p(x) apply unchanged.

The marginal p(z1) = int p(z1 | z2) p(z2) dz2 has no closed-form density; ``prior()`` returns
:class:`AncestralMarginal`, which draws from it (z2, then z1 given z2) and is what the
figures and the ArviZ export sample the code from.
"""

from __future__ import annotations

from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.distributions import constraints

__all__ = ["HierarchicalVAE", "AncestralMarginal"]


class AncestralMarginal(dist.TorchDistribution):
    """p(z1) = int p(z1 | z2) p(z2) dz2, sampled ancestrally; its density is not available.

    Parameters
    ----------
    top : Distribution
        p(z2), event shape (d2,) and empty batch shape.
    conditional : callable
        z2 (..., d2) -> p(z1 | z2), batch shape (...) and event shape (d1,).
    latent_dim : int
        d1.
    """

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, top: dist.Distribution, conditional: Callable, latent_dim: int):
        self.top = top
        self.conditional = conditional
        super().__init__(top.batch_shape, torch.Size([latent_dim]), validate_args=False)

    def rsample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        """z1 of shape sample_shape + (d1,): z2 ~ p(z2), then z1 ~ p(z1 | z2), reparameterized."""
        z2 = self.top.rsample(torch.Size(sample_shape))
        return self.conditional(z2).rsample()

    def sample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(
            "p(z1) of the two-layer VAE has no closed-form density; log p(x) is estimated "
            "by importance sampling (pyro_vae.elbos.importance_estimate)"
        )


class HierarchicalVAE(nn.Module):
    """p(x, z1, z2) = p(z2) p(z1 | z2) p(x | z1); ``forward`` is the Pyro model.

    Parameters
    ----------
    top_prior : nn.Module
        ``top_prior()`` is p(z2), a distribution with event shape (d2,).
    between : nn.Module
        Maps z2 (..., d2) to (..., 2 * d1): the mean and the log-scale of p(z1 | z2).
    decoder : nn.Module
        Maps z1 (..., d1) to the likelihood's parameters (..., F).
    likelihood : nn.Module
        ``likelihood(decoder(z1))`` is a distribution with event shape (D,).
    latent_dims : (int, int)
        (d1, d2): the sizes of z1 (next to x) and z2.
    """

    def __init__(
        self,
        top_prior: nn.Module,
        between: nn.Module,
        decoder: nn.Module,
        likelihood: nn.Module,
        latent_dims: tuple[int, int],
    ):
        super().__init__()
        self.top_prior = top_prior
        self.between = between
        self.decoder = decoder
        self.likelihood = likelihood
        self.latent_dims = tuple(latent_dims)

    def conditional(self, z2: torch.Tensor) -> dist.Distribution:
        """p(z1 | z2) with batch shape z2.shape[:-1] and event shape (d1,); scale exp(log sigma)."""
        loc, log_scale = self.between(z2).chunk(2, dim=-1)
        return dist.Normal(loc, log_scale.exp()).to_event(1)

    def prior(self) -> AncestralMarginal:
        """The marginal p(z1) that the decoder reads, for drawing codes (no density)."""
        return AncestralMarginal(self.top_prior(), self.conditional, self.latent_dims[0])

    def forward(self, x: torch.Tensor | None = None, *, n: int | None = None) -> torch.Tensor:
        """Run the model: sites "z2", "z1", "x", all in the plate "data".

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
        # its own name in the param store: a one-layer VAE's "vae" entries stay apart
        pyro.module("hierarchical_vae", self)
        if x is None and n is None:
            raise ValueError("give the data x or the number n of examples to generate")
        batch = n if x is None else x.shape[0]
        with pyro.plate("data", size=n or batch, subsample_size=batch):
            z2 = pyro.sample("z2", self.top_prior())
            z1 = pyro.sample("z1", self.conditional(z2))
            return pyro.sample("x", self.likelihood(self.decoder(z1)), obs=x)

    @torch.no_grad()
    def decode_mean(self, z1: torch.Tensor) -> torch.Tensor:
        """E[x | z1], shape (..., D), for z1 of shape (..., d1): pixel probabilities."""
        return self.likelihood(self.decoder(z1)).mean

    @torch.no_grad()
    def sample_means(self, num_samples: int) -> torch.Tensor:
        """E[x | z1], shape (num_samples, D), for ancestral draws z2 ~ p(z2), z1 ~ p(z1 | z2)."""
        return self.decode_mean(self.prior().sample((num_samples,)))
