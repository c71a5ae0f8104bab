"""Guides q(z | x) for the uniform-scale toy model whose support is exactly (a, b).

A Normal on the real line pushed through z = a + (b - a) * sigmoid(v): a logit-normal
on (a, b).  A plain Normal would put mass outside the prior's support, where
log p(z) = -inf and the ELBO is undefined.  In floating point the map rounds onto a
or b once |v| is large (about 37 in float64); :class:`SigmoidAffineTransform` keeps
such samples one representable number inside, so the support is open in practice too.
The bounds are read from the model on every call, so the support follows theta while
it is being fitted.

Two families share that map: :class:`AmortizedUniformScaleGuide` computes (loc, scale)
of v from x with a small network (the VAE's idea); :class:`LocalUniformScaleGuide`
keeps a free (loc, scale) per data point (classic mean-field VI).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.distributions import constraints
from torch.distributions.transforms import Transform
from torch.nn.functional import logsigmoid

from ..nets import mlp

__all__ = [
    "SigmoidAffineTransform",
    "AmortizedUniformScaleGuide",
    "LocalUniformScaleGuide",
    "fit_local_guide",
    "kl_to_posterior",
]

Bounds = Callable[[], "tuple[torch.Tensor, torch.Tensor]"]


class SigmoidAffineTransform(Transform):
    """v -> z = low + (high - low) * sigmoid(v), a bijection from the real line onto (low, high).

    Samples that round onto an endpoint are moved to the nearest number inside; the
    log-Jacobian log(high - low) + log sigmoid(v) + log sigmoid(-v) is evaluated at v,
    which the transform caches with each sample.
    """

    domain = constraints.real
    bijective = True
    sign = +1

    def __init__(self, low: torch.Tensor, high: torch.Tensor, cache_size: int = 1):
        super().__init__(cache_size=cache_size)
        self.low, self.high = low, high

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def codomain(self):
        return constraints.interval(self.low, self.high)

    def with_cache(self, cache_size=1):
        return SigmoidAffineTransform(self.low, self.high, cache_size=cache_size)

    def _call(self, v):
        z = self.low + (self.high - self.low) * torch.sigmoid(v)
        inside_low = torch.nextafter(self.low, self.high)
        inside_high = torch.nextafter(self.high, self.low)
        return torch.minimum(torch.maximum(z, inside_low), inside_high)

    def _inverse(self, z):
        return torch.logit((z - self.low) / (self.high - self.low))

    def log_abs_det_jacobian(self, v, z):
        return torch.log(self.high - self.low) + logsigmoid(v) + logsigmoid(-v)


class _SigmoidNormalGuide(nn.Module):
    """z = a + (b - a) sigmoid(v), v ~ Normal(loc(x), scale(x)); subclasses give (loc, scale)."""

    def __init__(self, bounds: Bounds):
        super().__init__()
        # a plain attribute (a bound method), not a submodule: the model's parameters must not
        # appear among the guide's, or an optimizer over both would see them twice
        self.bounds = bounds

    def unconstrained(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loc, scale) of v, each (B,), for x of shape (B,)."""
        raise NotImplementedError

    def distribution(self, x: torch.Tensor) -> dist.TransformedDistribution:
        """q(z | x) with batch shape (B,) and support (a, b)."""
        loc, scale = self.unconstrained(x)
        a, b = self.bounds()
        return dist.TransformedDistribution(dist.Normal(loc, scale), SigmoidAffineTransform(a, b))

    def forward(self, x: torch.Tensor, *, n: int | None = None) -> torch.Tensor:
        """Sample z of shape (B,) for the batch x of shape (B,) of a data set of size n."""
        batch = x.shape[0]
        with pyro.plate("data", size=n or batch, subsample_size=batch):
            return pyro.sample("z", self.distribution(x))


class AmortizedUniformScaleGuide(_SigmoidNormalGuide):
    """q(z | x): (loc, log scale) of v from an MLP of the standardized residual (x - mu) / b.

    The posterior depends on x only through ((x - mu) / b)^2 and on theta through a / b,
    so this dimensionless input serves data of any location and scale.

    Parameters
    ----------
    model : UniformScale
        Supplies (a, b) and mu; its parameters are not the guide's.
    hidden : sequence of int
        Hidden layer widths.
    """

    def __init__(self, model, hidden=(32, 32)):
        super().__init__(model.bounds)
        self.location = lambda: model.mu  # like bounds: read theta, do not own it
        self.net = mlp(1, 2, hidden=hidden, activation="tanh").double()

    def unconstrained(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, b = self.bounds()
        residual = (x - self.location()) / b
        loc, log_scale = self.net(residual[..., None]).unbind(-1)
        return loc, log_scale.exp()


class LocalUniformScaleGuide(_SigmoidNormalGuide):
    """q(z | x_i) with a free (loc_i, log scale_i) for each of the N data points.

    Needs the full data set in its original order: point i's parameters belong to row i.

    Parameters
    ----------
    model : UniformScale
        Supplies (a, b).
    num_points : int
        N.
    """

    def __init__(self, model, num_points: int):
        super().__init__(model.bounds)
        self.loc = nn.Parameter(torch.zeros(num_points, dtype=torch.float64))
        self.log_scale = nn.Parameter(torch.zeros(num_points, dtype=torch.float64))

    def unconstrained(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[0] != self.loc.shape[0]:
            raise ValueError(
                f"this guide holds parameters for {self.loc.shape[0]} points; got {x.shape[0]}"
            )
        return self.loc, self.log_scale.exp()


def fit_local_guide(
    model, guide: LocalUniformScaleGuide, x: torch.Tensor, *, steps: int = 400,
    lr: float = 0.05, num_particles: int = 8, seed: int = 0,
) -> list[float]:
    """Maximize the ELBO over the per-point guide only, theta held fixed; full batch.

    :func:`pyro_vae.train.fit` trains model and guide together on shuffled mini-batches,
    which a per-point guide cannot follow; here x is always the full data in order.

    Returns
    -------
    ELBO per point (nats), one value per step.
    """
    pyro.set_rng_seed(seed)
    elbo = pyro.infer.Trace_ELBO(
        num_particles=num_particles, vectorize_particles=True, max_plate_nesting=1
    )
    params = list(guide.parameters())
    optimizer = torch.optim.Adam(params, lr=lr)
    history = []
    for _ in range(steps):
        loss = elbo.differentiable_loss(model, guide, x, n=x.shape[0])
        # grad only w.r.t. the guide: theta's .grad stays untouched
        for p, g in zip(params, torch.autograd.grad(loss, params), strict=True):
            p.grad = g
        optimizer.step()
        history.append(-loss.item() / x.shape[0])
    return history


@torch.no_grad()
def kl_to_posterior(model, guide: _SigmoidNormalGuide, x: torch.Tensor, num_nodes: int = 96):
    """KL(q(z | x_i) || p(z | x_i)) per point by Gauss-Hermite quadrature, shape (B,).

    In v = logit((z - a) / (b - a)), with v ~ Normal(loc, scale):

        KL = E_v[ log N(v; loc, scale) - log sigmoid(v) - log sigmoid(-v)
                  - log N(x; mu, z(v)) + log p(x) ],

    the (b - a) of q's Jacobian cancelling that of the prior.  The integrand is smooth
    in v, so a fixed Gauss-Hermite rule is accurate; it shares nothing with Monte Carlo.
    """
    loc, scale = guide.unconstrained(x)
    a, b = model.bounds()
    nodes, weights = np.polynomial.hermite_e.hermegauss(num_nodes)  # weight exp(-t^2 / 2)
    nodes = torch.as_tensor(nodes, dtype=x.dtype)[:, None]
    weights = torch.as_tensor(weights / math.sqrt(2 * math.pi), dtype=x.dtype)[:, None]
    v = loc + scale * nodes  # (num_nodes, B)
    z = a + (b - a) * torch.sigmoid(v)
    log_q_v = dist.Normal(loc, scale).log_prob(v)
    integrand = (
        log_q_v - logsigmoid(v) - logsigmoid(-v)
        - dist.Normal(model.mu, z).log_prob(x) + model.log_marginal(x)
    )
    return (weights * integrand).sum(0)
