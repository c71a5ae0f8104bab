"""The unnormalised posterior of a trained VAE's codes: log p(z) and log p(x | z) at given z.

Every route to p(z | x) with the decoder fixed (annealed importance sampling, local
refinement of q, NUTS) needs the two terms of

    log p(x, z) = log p(z) + log p(x | z)

at values of z it chooses, for many chains and images at once, with gradients in z.
:class:`LatentJoint` reads them off the Pyro model itself (its trace conditioned on z), so
any prior and likelihood of the registries works unchanged.

z is **every latent site of the model, concatenated in the model's trace order**: for
:class:`~pyro_vae.models.VAE` the one site "z" (z = z_vae, d = latent_dim); for the two
stochastic layers of :class:`~pyro_vae.models.HierarchicalVAE` the model samples z2, then
z1, so z = (z2, z1) with d = d2 + d1, and

    log p(z) = log p(z2) + log p(z1 | z2),      log p(x | z) = log p(x | z1).

Values of z are laid out (C, B, d): C chains or particles in a plate at dim -2, the B
images of x (B, D) in the model's data plate at dim -1, as
:func:`pyro_vae.elbos.log_importance_weights` lays them.  :meth:`LatentJoint.split` and
:meth:`LatentJoint.join` convert between the concatenation and the sites' own values.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from ..errors import UserError
from ..rng import forked_rng

__all__ = ["LatentJoint"]


class LatentJoint:
    """log p(z) and log p(x | z) of ``model`` for the images ``x``, the decoder held fixed.

    Parameters
    ----------
    model : callable
        A Pyro model ``model(x)`` whose latent sites each have event shape (d_i,) inside a
        data plate at dim -1, e.g. :class:`pyro_vae.models.VAE` (site "z") or
        :class:`pyro_vae.models.HierarchicalVAE` (sites "z2", "z1").
    x : (B, D) tensor
        The images the posterior is of.
    keep_stream : bool
        Find the sites (one run of the model) on a copy of the random state, so the random
        stream is left as it was; by default the run draws from it, as the routes that
        build one joint per chunk (AIS, q*) always have, which keeps their numbers.

    Attributes
    ----------
    sites : tuple of (str, int)
        The latent sites in the model's trace order and their sizes d_i.
    latent_dim : int
        d = sum of the d_i, the size of the concatenated z.

    Raises
    ------
    UserError
        If the model has no latent site, or one whose event shape is not a vector.
    """

    def __init__(self, model, x: torch.Tensor, keep_stream: bool = False):
        self.model, self.x = model, x
        with torch.no_grad(), (forked_rng(x) if keep_stream else nullcontext()):
            trace = poutine.trace(model).get_trace(x[:1])
        latent = [(name, site) for name, site in trace.nodes.items()
                  if site["type"] == "sample" and not site["is_observed"]
                  and not site_is_subsample(site)]
        if not latent:
            raise UserError("the inference gaps need a model with a latent site; this one has "
                            "none")
        for name, site in latent:
            if len(site["fn"].event_shape) != 1:
                raise UserError(f"the inference gaps need latent sites with one event dimension "
                                f"(a vector per image); site {name!r} has event shape "
                                f"{tuple(site['fn'].event_shape)}")
        self.sites = tuple((name, int(site["fn"].event_shape[0])) for name, site in latent)
        self.latent_dim = sum(size for _, size in self.sites)

    @property
    def num_images(self) -> int:
        return self.x.shape[0]

    @property
    def site_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.sites)

    def split(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """The sites' values {name: (..., d_i)} of the concatenation z (..., d)."""
        pieces = z.split([size for _, size in self.sites], dim=-1)
        return dict(zip(self.site_names, pieces, strict=True))

    def join(self, values: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The concatenation z (..., d) of the sites' values {name: (..., d_i)}, in trace order."""
        return torch.cat([values[name] for name in self.site_names], dim=-1)

    def read(self, trace, leading: tuple[int, ...] | None = None) -> torch.Tensor:
        """The concatenation z of the latent sites' values recorded in ``trace`` (a run of the
        model, or of a guide with the same sites), each expanded to ``leading + (d_i,)`` when
        ``leading`` is given (sites drawn outside a plate broadcast over it)."""
        return self.join({name: trace.nodes[name]["value"] if leading is None
                          else trace.nodes[name]["value"].expand(*leading, size)
                          for name, size in self.sites})

    def log_terms(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log p(z), log p(x | z)), each of shape (C, B), for z of shape (C, B, d).

        log p(z) sums every latent site's term, log p(x | z) every observed site's.
        Differentiable in z (call it under ``torch.enable_grad`` for gradients).
        """
        conditioned = poutine.condition(self.model, data=self.split(z))
        with pyro.plate("chains", z.shape[0], dim=-2):
            trace = poutine.trace(conditioned).get_trace(self.x)
        trace.compute_log_prob()
        names = set(self.site_names)
        sites = [(name, site) for name, site in trace.nodes.items()
                 if site["type"] == "sample" and not site_is_subsample(site)]
        log_prior = sum(site["log_prob"] for name, site in sites if name in names)
        # conditioned, the latent sites show as observed: the rest is the data's likelihood
        log_lik = sum(site["log_prob"] for name, site in sites if name not in names)
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
        return self.read(trace, (chains, self.num_images))
