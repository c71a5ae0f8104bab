"""The variational autoencoder's generative model p(z) p(x | z) as a Pyro model.

    z ~ prior                         (B, latent_dim)
    x | z ~ likelihood(decoder(z))    (B, D)

inside ``pyro.plate("data", n, subsample_size=B)``, so a batch of B out of n
examples gives an ELBO estimate scaled to the full data set (factor n / B).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pyro
import torch
from torch import nn

from ..config import RunConfig
from ..guides import GUIDES
from ..likelihoods import LIKELIHOODS
from ..nets import NETWORKS
from ..priors import PRIORS

__all__ = ["VAE", "build_vae"]


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


def _build(factory: Callable, available: dict[str, Any]):
    """Call ``factory`` with the entries of ``available`` that its signature names.

    This is how a registered piece asks for what it needs (the ``vamp`` prior for the
    guide, ``conv`` for the image shape, ``student_t`` for ``df``) without every
    factory having to accept every option.
    """
    parameters = inspect.signature(factory).parameters
    return factory(**{k: v for k, v in available.items() if k in parameters})


def build_vae(
    config: RunConfig,
    data_dim: int,
    *,
    binary_data: bool = True,
    image_shape: tuple[int, int] | None = None,
) -> tuple[VAE, nn.Module]:
    """The (model, guide) pair that ``config`` describes, for data of ``data_dim`` features.

    Build order: likelihood and guide class (they fix the networks' output sizes),
    networks, guide, prior (last, because the ``vamp`` prior uses the guide's encoder).
    ``image_shape`` (H, W) is needed by the ``conv`` network for non-square images.
    """
    m = config.model
    latent = m.latent_dim
    likelihood = _build(
        LIKELIHOODS.get(config.likelihood.name),
        dict(vars(config.likelihood), data_dim=data_dim, binary_data=binary_data),
    )
    guide_cls = GUIDES.get(config.guide.name)
    encoder, decoder = _build(
        NETWORKS.get(m.network),
        dict(
            vars(m),
            data_dim=data_dim,
            encoder_features=guide_cls.encoder_features(latent),
            decoder_features=likelihood.decoder_features(data_dim),
            image_shape=image_shape,
        ),
    )
    guide = _build(guide_cls, dict(vars(config.guide), encoder=encoder, latent_dim=latent))
    prior = _build(
        PRIORS.get(config.prior.name),
        dict(vars(config.prior), latent_dim=latent, data_dim=data_dim, guide=guide),
    )
    return VAE(prior, decoder, likelihood), guide
