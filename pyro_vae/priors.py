"""Priors p(z) over the latent code, chosen by name from :data:`PRIORS`.

A prior is an ``nn.Module`` whose ``forward()`` returns a distribution with event
shape (latent_dim,) and empty batch shape; the model's data plate broadcasts it.
Learnable priors keep their parameters as module parameters, so ``fit`` trains them.

A factory is called with the keyword arguments its signature names, out of
``latent_dim``, ``data_dim``, ``guide`` and the ``[prior]`` config entries
(``components``, ``df``); see :func:`pyro_vae.models.vae.build_vae`.  Adding a
prior is one function and one ``@PRIORS.register`` line::

    @PRIORS.register("cauchy")
    def cauchy(latent_dim: int) -> nn.Module:
        return LocationScalePrior(latent_dim, dist.Cauchy)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pyro.distributions as dist
import torch
from torch import nn

from .registry import Registry

__all__ = [
    "PRIORS",
    "LocationScalePrior",
    "MixturePrior",
    "VampPrior",
]

PRIORS = Registry("prior")


class LocationScalePrior(nn.Module):
    """p(z) = prod_j family(z_j; loc_j, scale_j), by default loc 0 and scale 1.

    Parameters
    ----------
    latent_dim : int
    family : callable
        ``family(loc, scale, **shape)`` is a univariate distribution, e.g. ``dist.Laplace``.
    learnable : bool
        Train ``loc`` and ``log_scale`` (shape (latent_dim,)) instead of fixing them.
    **shape
        Extra tensors or numbers of the family, e.g. ``df`` of ``dist.StudentT``.
    """

    def __init__(
        self, latent_dim: int, family: Callable = dist.Normal, learnable: bool = False, **shape
    ):
        super().__init__()
        self.family = family
        self.shape = shape
        loc, log_scale = torch.zeros(latent_dim), torch.zeros(latent_dim)
        if learnable:
            self.loc = nn.Parameter(loc)
            self.log_scale = nn.Parameter(log_scale)
        else:  # buffers: they follow .to(device) and the state dict but are not trained
            self.register_buffer("loc", loc)
            self.register_buffer("log_scale", log_scale)

    def forward(self) -> dist.Distribution:
        return self.family(loc=self.loc, scale=self.log_scale.exp(), **self.shape).to_event(1)


@PRIORS.register("normal")
def normal(latent_dim: int) -> LocationScalePrior:
    """p(z) = N(0, I) in ``latent_dim`` dimensions."""
    return LocationScalePrior(latent_dim, dist.Normal)


@PRIORS.register("learnable_normal")
def learnable_normal(latent_dim: int) -> LocationScalePrior:
    """p(z) = N(m, diag(s^2)) with m and log s learned with the decoder."""
    return LocationScalePrior(latent_dim, dist.Normal, learnable=True)


@PRIORS.register("laplace")
def laplace(latent_dim: int) -> LocationScalePrior:
    """p(z) = prod_j Laplace(z_j; 0, 1): heavier tails and a sharper peak than N(0, 1)."""
    return LocationScalePrior(latent_dim, dist.Laplace)


@PRIORS.register("student_t")
def student_t(latent_dim: int, df: float = 3.0) -> LocationScalePrior:
    """p(z) = prod_j StudentT(z_j; df, 0, 1), heavy-tailed for small ``df``."""
    return LocationScalePrior(latent_dim, dist.StudentT, df=float(df))


class MixturePrior(nn.Module):
    """p(z) = sum_k w_k N(z; m_k, diag(s_k^2)), K components, all learned.

    Parameters
    ----------
    latent_dim : int
    components : int
        K >= 1.  The means start at K fixed random draws from N(0, I) (not all at 0,
        which would leave the components identical and their gradients equal).
    """

    def __init__(self, latent_dim: int, components: int = 10):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(components))
        self.loc = nn.Parameter(torch.randn(components, latent_dim))
        self.log_scale = nn.Parameter(torch.zeros(components, latent_dim))

    def forward(self) -> dist.Distribution:
        return dist.MixtureSameFamily(
            dist.Categorical(logits=self.logits),
            dist.Normal(self.loc, self.log_scale.exp()).to_event(1),
        )


PRIORS.register("mixture")(MixturePrior)


class VampPrior(nn.Module):
    """The VampPrior (Tomczak & Welling, 2018): p(z) = (1/K) sum_k q(z | u_k), u_k learned.

    ``q(z | u)`` is the guide's Gaussian encoder head, ``guide.encode(u) -> (loc, scale)``
    (for the ``iaf`` guide this is the Gaussian before the flow).  The prior calls the
    guide's encoder, so it shares the encoder's weights rather than copying them: the
    guide is not registered as a submodule here (it already is one of the model's
    companions, and registering it twice would duplicate its parameters in state dicts).

    Parameters
    ----------
    latent_dim : int
    data_dim : int
        D, the size of each pseudo-input u_k.
    guide : nn.Module
        Has ``encode(x)`` for x of shape (..., D) returning (loc, scale), each (..., latent_dim).
    components : int
        K pseudo-inputs, shape (K, D), initialised uniformly in (0, 1) like pixel grey levels.
    """

    def __init__(self, latent_dim: int, data_dim: int, guide: nn.Module, components: int = 10):
        super().__init__()
        self.pseudo_inputs = nn.Parameter(torch.rand(components, data_dim))
        with torch.no_grad():
            scale = guide.encode(self.pseudo_inputs[:1])[1] if hasattr(guide, "encode") else None
        if scale is None or not bool((scale > 0).all()):
            raise ValueError(
                "prior.name = 'vamp' needs a guide with a Gaussian encoder (guide.name = "
                "'gaussian' or 'iaf'), not the point mass 'delta'"
            )
        self._encode = guide.encode  # a bound method: no second copy of the encoder's weights

    def forward(self) -> dist.Distribution:
        loc, scale = self._encode(self.pseudo_inputs)  # (K, latent_dim) each
        components = loc.shape[0]
        uniform = torch.full((components,), -math.log(components), device=loc.device)
        return dist.MixtureSameFamily(
            dist.Categorical(logits=uniform),
            dist.Normal(loc, scale).to_event(1),
        )


PRIORS.register("vamp")(VampPrior)
