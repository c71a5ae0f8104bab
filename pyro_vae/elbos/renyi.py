"""The Renyi and importance-weighted bounds, per data point, honouring scales and masks.

    Per data point x_i and K particles z_ik ~ q(z | x_i), with
    w_ik = log p(x_i, z_ik) - log q(z_ik | x_i),

        L_alpha(x_i) = 1 / (1 - alpha) * [logsumexp_k (1 - alpha) w_ik - log K]

(Li & Turner, 2016); alpha = 0 is the importance-weighted bound of Burda et al. (2016),
which increases with K towards log p(x_i); K = 1 gives the ELBO for every alpha.  The
log-sum-exp is taken per data point.  Pyro's ``RenyiELBO`` instead sums w over the whole
batch before the log-sum-exp, a bound on the batch's joint that for a batch of B points
weights each particle by the product of B importance ratios (one particle dominates);
that is why these are written here.

*Data points* are the elements of the plates that every sample site of the model and the
guide sits in (the VAE's ``data`` plate; both plates where every site is in two); sites
in further plates are summed within their point.  Where a latent site lies outside every
plate, the whole batch is one point and the bound is the joint one, as Pyro's.

*Scales and masks.*  Each point i has the scale s_i of its observed sites (the plate's
N / B, times a ``poutine.scale`` factor, times 0 where ``poutine.mask`` hides it; the
largest over the point's observations when they differ).  A site with scale c_i enters
w_i as (c_i / s_i) log p, so a KL weight on the latent sites (``fit``'s warm-up) stays
inside the weight, and the loss is -sum_i s_i L_alpha(x_i): with K = 1 exactly
``Trace_ELBO``'s value, masked points contributing nothing.

The particles are vectorized in a plate left of the model's plates (``max_plate_nesting``,
given or inferred), and the gradient is pathwise: every latent guide site must be fully
reparameterized.
"""

from __future__ import annotations

import math

import torch
from pyro.infer.enum import get_importance_trace
from pyro.infer.util import is_identically_zero, is_validation_enabled
from pyro.util import check_if_enumerated

from ..errors import UserError
from .base import EstimatorELBO, plate_nesting

__all__ = ["RenyiBound", "IWAEBound"]


def _full_rank(value, rank: int, like: torch.Tensor) -> torch.Tensor:
    """``value`` (a number or a tensor of at most ``rank`` dims) with exactly ``rank`` dims,
    on ``like``'s device (a number also in its dtype)."""
    if torch.is_tensor(value):
        value = value.to(like.device)
    else:
        value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    return value.reshape((1,) * (rank - value.dim()) + value.shape)


def _effective_scale(site, rank: int) -> torch.Tensor:
    """c: the site's scale times its mask (0 where masked), ``rank`` dims."""
    like = site["unscaled_log_prob"]
    scale = _full_rank(site["scale"], rank, like)
    mask = site["mask"]
    if mask is None or mask is True:
        return scale
    return scale * _full_rank(mask, rank, like)


def _reduce(value: torch.Tensor, keep: set[int], reduce_fn) -> torch.Tensor:
    """``reduce_fn(value, dims, keepdim=True)`` over the dims (negative) not in ``keep``."""
    dims = [d for d in range(-value.dim(), 0) if d not in keep]
    return reduce_fn(value, dims, keepdim=True) if dims else value


def _check_reparameterized(name: str, site) -> None:
    """A pathwise gradient only: refuse a guide site with a score-function part."""
    if not site["fn"].has_rsample or not is_identically_zero(site["score_parts"].score_function):
        raise UserError(
            f"guide site {name!r} is not fully reparameterized (no rsample, or a rejection "
            "sampler's score term); the per-point bounds 'iwae' and 'renyi' need rsample: "
            "use elbo 'trace', 'graph' or 'score' for this guide"
        )


class RenyiBound(EstimatorELBO):
    """The per-point Renyi bound L_alpha (alpha >= 0, alpha != 1) with K vectorized particles.

    Parameters
    ----------
    alpha : float
        0 gives the IWAE bound; 0 < alpha < 1 lies between it and the ELBO.
    num_particles : int
        K, importance samples per data point.
    max_plate_nesting : int, optional
        How many plates the model nests (the particles go left of them); inferred by
        running the pair once when None.
    """

    def __init__(self, alpha: float = 0.5, num_particles: int = 1,
                 max_plate_nesting: int | None = None):
        if alpha < 0 or alpha == 1:
            raise ValueError(f"alpha must be >= 0 and != 1 (1 is the ELBO), got {alpha}")
        if num_particles < 1:
            raise ValueError(f"num_particles must be >= 1, got {num_particles}")
        super().__init__(num_particles=num_particles, vectorize_particles=True,
                         max_plate_nesting=plate_nesting(max_plate_nesting))
        self.alpha = alpha

    def _get_trace(self, model, guide, args, kwargs):
        model_trace, guide_trace = get_importance_trace(
            "flat", self.max_plate_nesting, model, guide, args, kwargs
        )
        if is_validation_enabled():
            check_if_enumerated(guide_trace)
        return model_trace, guide_trace

    def log_weights(self, model, guide, *args, **kwargs):
        """The per-point log weights w and scales s of one vectorized draw of K particles.

        Returns
        -------
        w : tensor, shape (K, *points)
            sum over the point's sites of (c / s) log p - (c / s) log q; ``points`` is the
            model's plate dims, with the data points' sizes and 1 in the other plates.
        scale : tensor, shape (1, *points) (or fewer leading dims)
            s, the points' scales (0 for a masked point).
        """
        (model_trace, guide_trace), = self._get_traces(model, guide, args, kwargs)
        # the particles' dim: Pyro adds it to the nesting when it vectorizes K > 1 particles
        rank = self.max_plate_nesting + (self.num_particles == 1)
        sites = [(name, site, trace is model_trace)
                 for trace in (model_trace, guide_trace)
                 for name, site in trace.nodes.items() if site["type"] == "sample"]
        observed = [site for _, site, _ in sites if site["is_observed"]]
        if not observed:
            raise UserError("the model has no observed site: there is no bound to compute")
        for name, site, in_model in sites:
            if not in_model and not site["is_observed"]:
                _check_reparameterized(name, site)
        # a point is an element of the plates every site sits in (the particles' excluded)
        plates = set.intersection(*({frame.dim for frame in site["cond_indep_stack"]
                                     if frame.vectorized and frame.dim > -rank}
                                    for _, site, _ in sites))
        scale = torch.stack(torch.broadcast_tensors(
            *(_reduce(_effective_scale(site, rank), plates, torch.amax) for site in observed)
        )).amax(0)
        if bool((scale == 0).any()):
            self._check_masked_points(sites, scale, plates, rank)
        w = sum((1.0 if in_model else -1.0)
                * _reduce(_full_rank(site["log_prob"], rank, site["unscaled_log_prob"]),
                          plates | {-rank}, torch.sum)
                for _, site, in_model in sites)
        # site["log_prob"] carries c; dividing by s leaves c / s (a masked point's w is 0)
        w = w / torch.where(scale > 0, scale, torch.ones_like(scale))
        return w.expand(self.num_particles, *w.shape[1:]), scale

    @staticmethod
    def _check_masked_points(sites, scale, plates, rank) -> None:
        """No site may count at a point whose observations all have scale 0 (masked)."""
        for name, site, _ in sites:
            counted = _reduce(_effective_scale(site, rank).abs(), plates, torch.amax) > 0
            if bool((counted & (scale == 0)).any()):
                raise UserError(
                    f"site {name!r} counts at a data point whose observations are all masked "
                    "or scaled to 0: mask every site of that point, or use elbo 'trace'"
                )

    def pointwise(self, model, guide, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """(L_alpha of each point, shape ``points``, and its scale s, broadcastable to it)."""
        w, scale = self.log_weights(model, guide, *args, **kwargs)
        k = self.num_particles
        bound = (torch.logsumexp((1 - self.alpha) * w, dim=0) - math.log(k)) / (1 - self.alpha)
        return bound, scale[0] if scale.dim() else scale

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """-sum_i s_i L_alpha(x_i): estimates -L_alpha of the full data set (nats)."""
        bound, scale = self.pointwise(model, guide, *args, **kwargs)
        return -(scale * bound).sum()


class IWAEBound(RenyiBound):
    """The importance-weighted bound: :class:`RenyiBound` with alpha = 0."""

    def __init__(self, num_particles: int = 1, max_plate_nesting: int | None = None):
        super().__init__(alpha=0.0, num_particles=num_particles,
                         max_plate_nesting=max_plate_nesting)
