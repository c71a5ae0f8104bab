"""The Renyi and importance-weighted bounds, per data point, as ``fit`` needs them.

``fit`` calls ``elbo.differentiable_loss(model, guide, x, n=N)`` and back-propagates it:
its value is -bound (nats, for the full data set of N points), its gradient the estimator's.

    Per data point x_i and K particles z_ik ~ q(z | x_i), with
    w_ik = log p(x_i, z_ik) - log q(z_ik | x_i),

        L_alpha(x_i) = 1 / (1 - alpha) * [logsumexp_k (1 - alpha) w_ik - log K]

    (Li & Turner, 2016); alpha = 0 is the importance-weighted bound of Burda et al. (2016),
    which increases with K towards log p(x_i); K = 1 gives the ELBO for every alpha.  The
    log-sum-exp is taken per data point.  Pyro's ``RenyiELBO`` instead sums w over the whole
    batch before the log-sum-exp, a bound on the batch's joint that for a batch of B points
    weights each particle by the product of B importance ratios (one particle dominates);
    that is why these are written here.  The particles run vectorized in a plate at dim -2,
    so the model's and guide's data plate must be at dim -1, and every latent site must be
    local (inside the data plate).  The sum over the batch is scaled by the data plate's
    N / B, so the loss estimates the full-data bound like Pyro's ELBOs do.
"""

from __future__ import annotations

import math

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

__all__ = ["RenyiBound", "IWAEBound", "pointwise_log_weights"]


def _is_latent(site) -> bool:
    return site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)


def pointwise_log_weights(model, guide, *args, num_particles: int, **kwargs):
    """Differentiable per-point log weights and the data plate's scale N / B.

    Returns
    -------
    w : (K, B) tensor
        log p(x_b, z_kb) - log q(z_kb | x_b), with any extra scale of a site (the KL weight
        ``fit`` puts on latent sites during warm-up) kept relative to N / B.
    scale : float
        N / B, the scale of the observed sites.
    """
    with pyro.plate("particles", num_particles, dim=-2):
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs
        )
    observed = [s for s in model_trace.nodes.values() if s["type"] == "sample" and s["is_observed"]]
    if not observed:
        raise ValueError("the model has no observed site: there is no bound to compute")
    scale = float(observed[0]["scale"])
    w = 0.0
    for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            if not any(frame.dim == -1 and frame.name != "particles"
                       for frame in site["cond_indep_stack"]):
                raise ValueError(
                    f"site {name!r} is not inside a data plate at dim -1: per-point bounds "
                    "need every latent variable to be local to a data point"
                )
            if sign < 0 and _is_latent(site) and not site["fn"].has_rsample:
                # the gradient below is pathwise only; a score-function term would be missing
                raise NotImplementedError(
                    f"guide site {name!r} cannot be reparameterized; per-point bounds here "
                    "need rsample (use elbo 'graph' or 'score' for such guides)"
                )
            log_p = site["fn"].log_prob(site["value"])
            w = w + sign * (site["scale"] / scale) * log_p
    batch = observed[0]["value"].shape[0] if observed[0]["value"].dim() else 1
    return torch.as_tensor(w).expand(num_particles, batch), scale


class RenyiBound:
    """The per-point Renyi bound L_alpha (alpha >= 0, alpha != 1) with K vectorized particles.

    Parameters
    ----------
    alpha : float
        0 gives the IWAE bound; 0 < alpha < 1 lies between it and the ELBO.
    num_particles : int
        K, importance samples per data point.
    """

    def __init__(self, alpha: float = 0.5, num_particles: int = 1):
        if alpha < 0 or alpha == 1:
            raise ValueError(f"alpha must be >= 0 and != 1 (1 is the ELBO), got {alpha}")
        if num_particles < 1:
            raise ValueError(f"num_particles must be >= 1, got {num_particles}")
        self.alpha = alpha
        self.num_particles = num_particles

    def pointwise(self, model, guide, *args, **kwargs) -> tuple[torch.Tensor, float]:
        """(L_alpha(x_b) for each point of the batch, shape (B,), and N / B)."""
        w, scale = pointwise_log_weights(
            model, guide, *args, num_particles=self.num_particles, **kwargs
        )
        k = self.num_particles
        bound = (torch.logsumexp((1 - self.alpha) * w, dim=0) - math.log(k)) / (1 - self.alpha)
        return bound, scale

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """-(N / B) sum_b L_alpha(x_b): estimates -L_alpha of the full data set (nats)."""
        bound, scale = self.pointwise(model, guide, *args, **kwargs)
        return -scale * bound.sum()

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return self.differentiable_loss(model, guide, *args, **kwargs).item()


class IWAEBound(RenyiBound):
    """The importance-weighted bound: :class:`RenyiBound` with alpha = 0."""

    def __init__(self, num_particles: int = 1):
        super().__init__(alpha=0.0, num_particles=num_particles)
