"""The ELBO identity on the uniform-scale toy model, checked per point three independent ways.

For any guide q(z | x),

    log p(x) = ELBO(q) + KL(q(z | x) || p(z | x)),    ELBO(q) = E_q[log p(x, z) - log q(z | x)],

so the ELBO is a lower bound whose gap is exactly the KL to the posterior.  On the toy
model z ~ Uniform(a, b), x | z ~ Normal(mu, z) each of the three terms can be computed
without the others:

* log p(x): the E1 closed form (:meth:`pyro_vae.models.uniform_scale.UniformScale.log_marginal`);
* the ELBO: Monte Carlo over Pyro's traces of model and guide
  (:func:`pyro_vae.elbos.log_importance_weights`), with its standard error;
* the KL: Gauss-Hermite quadrature (:func:`pyro_vae.guides.uniform_scale.kl_to_posterior`).

If the identity holds, (log p(x) - ELBO - KL) / se(ELBO) is standard normal at every x.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..elbos import log_importance_weights
from ..guides.uniform_scale import kl_to_posterior

__all__ = ["ElboIdentity", "elbo_identity"]


@dataclass
class ElboIdentity:
    """The identity's three terms at the points x, each of shape (B,) (nats per point).

    Attributes
    ----------
    x : (B,) tensor
        The points.
    log_px : (B,) tensor
        Exact log p(x) (E1 closed form).
    elbo, elbo_se : (B,) tensors
        Monte Carlo ELBO and its standard error.
    kl : (B,) tensor
        KL(q(z | x) || p(z | x)) by quadrature.
    """

    x: torch.Tensor
    log_px: torch.Tensor
    elbo: torch.Tensor
    elbo_se: torch.Tensor
    kl: torch.Tensor

    @property
    def z_scores(self) -> torch.Tensor:
        """(log p(x) - ELBO - KL) / se(ELBO), shape (B,): standard normal if the identity holds."""
        return (self.log_px - self.elbo - self.kl) / self.elbo_se


@torch.no_grad()
def elbo_identity(model, guide, x: torch.Tensor, num_particles: int = 4000) -> ElboIdentity:
    """Check log p(x) = ELBO + KL(q(z|x) || p(z|x)) per point, three independent ways.

    Parameters
    ----------
    model : UniformScale
        The toy model at the theta to check.
    guide : AmortizedUniformScaleGuide or LocalUniformScaleGuide
        Any guide whose support is (a, b); the identity holds whether or not it is fitted.
    x : (B,) tensor
        Points (float64).
    num_particles : int
        K, the Monte Carlo draws of z per point for the ELBO; its s.e. falls as 1 / sqrt(K).
    """
    w = log_importance_weights(model, guide, x, num_particles)  # (K, B)
    return ElboIdentity(
        x, model.log_marginal(x), w.mean(0), w.std(0) / math.sqrt(num_particles),
        kl_to_posterior(model, guide, x),
    )
