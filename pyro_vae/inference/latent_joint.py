"""The unnormalised posterior of a trained VAE's code: log p(z) and log p(x | z) at given z.

Every route to p(z | x) with the decoder fixed (annealed importance sampling, local
refinement of q, NUTS) needs the two terms of

    log p(x, z) = log p(z) + log p(x | z)

at values of z it chooses, for many chains and images at once, with gradients in z.
:class:`LatentJoint` reads them off the Pyro model itself (its trace conditioned on z), so
any prior and likelihood of the registries works unchanged.  Values of z are laid out
(C, B, d): C chains or particles in a plate at dim -2, the B images of x (B, D) in the
model's data plate at dim -1, as :func:`pyro_vae.elbos.log_importance_weights` lays them.
"""

from __future__ import annotations

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from ..errors import UserError

__all__ = ["LATENT_SITE", "LatentJoint"]

LATENT_SITE = "z"  # the code's site in pyro_vae.models.VAE


class LatentJoint:
    """log p(z) and log p(x | z) of ``model`` for the images ``x``, the decoder held fixed.

    Parameters
    ----------
    model : callable
        A Pyro model ``model(x)`` with one latent site ``"z"`` of event shape (d,) inside a
        data plate at dim -1, e.g. :class:`pyro_vae.models.VAE`.
    x : (B, D) tensor
        The images the posterior is of.

    Raises
    ------
    UserError
        If the model has latent sites other than ``"z"`` (two stochastic layers).
    """

    def __init__(self, model, x: torch.Tensor):
        self.model, self.x = model, x
        with torch.no_grad():
            trace = poutine.trace(model).get_trace(x[:1])
        latent = [name for name, site in trace.nodes.items() if site["type"] == "sample"
                  and not site["is_observed"] and not site_is_subsample(site)]
        if latent != [LATENT_SITE]:
            raise UserError(f"the inference gaps are computed for a model with one latent site "
                            f"'z'; this one has {', '.join(latent) or 'none'}")
        self.latent_dim = int(trace.nodes[LATENT_SITE]["value"].shape[-1])

    @property
    def num_images(self) -> int:
        return self.x.shape[0]

    def log_terms(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log p(z), log p(x | z)), each of shape (C, B), for z of shape (C, B, d).

        Differentiable in z (call it under ``torch.enable_grad`` for gradients).
        """
        conditioned = poutine.condition(self.model, data={LATENT_SITE: z})
        with pyro.plate("chains", z.shape[0], dim=-2):
            trace = poutine.trace(conditioned).get_trace(self.x)
        trace.compute_log_prob()
        log_prior = trace.nodes[LATENT_SITE]["log_prob"]
        # every other sample site is observed: the data's log-likelihood
        log_lik = sum(site["log_prob"] for name, site in trace.nodes.items()
                      if site["type"] == "sample" and name != LATENT_SITE
                      and not site_is_subsample(site))
        shape = z.shape[:-1]
        return log_prior.expand(shape), log_lik.expand(shape)

    def log_joint(self, z: torch.Tensor) -> torch.Tensor:
        """log p(x, z), shape (C, B), for z of shape (C, B, d)."""
        log_prior, log_lik = self.log_terms(z)
        return log_prior + log_lik

    @torch.no_grad()
    def sample_prior(self, chains: int) -> torch.Tensor:
        """z ~ p(z), shape (chains, B, d): the model run forward under the chains plate."""
        with pyro.plate("chains", chains, dim=-2):
            trace = poutine.trace(self.model).get_trace(self.x)
        return trace.nodes[LATENT_SITE]["value"].expand(chains, self.num_images, self.latent_dim)
