"""Local refinement of q(z | x): the guide's own family fitted to each image alone.

The encoder gives every x its variational parameters phi(x) at once; the best member of
the same family for this one x,

    q*(z | x) = argmax_phi ELBO(x; phi),
    ELBO(x; phi) = E_{q_phi}[log p(x, z) - log q_phi(z)],

is what an infinitely good encoder would give.  Cremer, Li & Duvenaud (2018) split the
inference gap log p(x) - ELBO(q) at it:

    approximation gap = log p(x) - ELBO(q*)      (the family's fault)
    amortization gap  = ELBO(q*) - ELBO(q)       (the encoder's fault)

q* is found by stochastic variational inference on phi alone, the decoder fixed: Adam on
the reparameterized ELBO with M particles per step, started at the encoder's output.
**Stopping rule**: a fixed number S of steps (no early stop, so every image gets the
same budget); :attr:`LocalFit.late_gain`, the rise of the training ELBO over the last
fifth of the steps, says whether S was enough (near 0: converged).  The final q is then
scored with fresh draws: its ELBO, that ELBO's Monte Carlo standard error, and log p(x)
by importance sampling with q as the proposal.

For a Gaussian guide phi = (mu, log sigma) per image; for the IAF guide, phi is its
Gaussian head (mu, log sigma) with the shared flows held fixed (the flows are no function
of x, so they are not amortized; a bound from inside the family).  For the two-layer guide
q(z1 | x) q(z2 | z1) of :class:`~pyro_vae.guides.hierarchical.HierarchicalGaussianGuide`,
phi is the Gaussian head of q(z1 | x) and the upper network q_net(z2 | z1), no function of
x, is held fixed for the same reason:

    q*(z1, z2 | x) = N(z1; mu, diag(sigma^2)) q_net(z2 | z1),
    log q*(z) = log N(z1; mu, sigma) + log q_net(z2 | z1)

over the concatenation z = (z2, z1) of :class:`LatentJoint` (the model's order), an exact
density, so the ELBO and the importance-sampled log p(x) of q* are honest; ``encoder(x) =
(mu, log sigma)`` is one member of this family, so q* can only gain on q (Adam started
there).  Every image is its own problem, so B images are fitted at once with parameters of
shape (B, d1), in chunks of rows that bound memory.  The per-image flow of
:mod:`.local_flow` uses the same loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch.distributions import constraints

from ..elbos.importance import CHUNK_ELEMENTS
from ..errors import UserError
from ..guides import AmortizedGaussianGuide, IAFGuide
from ..guides.hierarchical import HierarchicalGaussianGuide
from .latent_joint import LatentJoint

__all__ = [
    "FINAL_LR_RATIO",
    "SLOW_LR_RATIO",
    "LocalFit",
    "TwoLayerFamily",
    "gaussian_head",
    "guide_family",
    "guide_draws",
    "fit_local",
    "refine_gaussian",
    "fit_in_chunks",
]

FINAL_LR_RATIO = 0.05  # the learning rate of the last step, relative to the first
SLOW_LR_RATIO = 0.1  # the learning rate of a flow's weights, relative to its base's
# draws of the final q kept per image for the figures and moments
_KEPT_DRAWS = 500
# a fit's last fifth of steps, against the fifth before it: the stopping rule's check
_LATE_FRACTION = 5


@dataclass
class LocalFit:
    """A per-image variational fit, scored with fresh draws; tensors over the B images.

    Attributes
    ----------
    elbo, elbo_se : (B,) tensors
        ELBO(x; phi) of the final q from ``eval_particles`` draws, and its Monte Carlo
        standard error (sd of the log weights / sqrt(K)).
    log_likelihood : (B,) tensor
        log p(x) by importance sampling with the final q as proposal, same draws.
    late_gain : (B,) tensor
        Mean training ELBO over the last fifth of the steps minus that over the fifth
        before: how much the bound was still rising when the fixed budget ended.
    draws : (S, B, d) tensor
        Up to 500 draws of the final q (figures, moments against NUTS).
    steps, particles, eval_particles : int
    """

    elbo: torch.Tensor
    elbo_se: torch.Tensor
    log_likelihood: torch.Tensor
    late_gain: torch.Tensor
    draws: torch.Tensor
    steps: int
    particles: int
    eval_particles: int


def gaussian_head(guide, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The encoder's (loc, scale), each (B, d), of q(z | x), or of q(z1 | x) for the two-layer
    guide; a UserError for a guide without a Gaussian head (the point-mass ``delta`` guide
    has no density to refine)."""
    if getattr(guide, "point_mass", False) or not isinstance(
            guide, AmortizedGaussianGuide | HierarchicalGaussianGuide):
        raise UserError(f"the inference gaps need a guide with a density and a Gaussian head "
                        f"(gaussian, iaf, two-layer gaussian); this checkpoint's is "
                        f"{type(guide).__name__}")
    with torch.no_grad():
        return guide.encode(x)


class TwoLayerFamily(dist.TorchDistribution):
    """N(z1; loc, diag(scale^2)) q_net(z2 | z1) over the concatenation of ``joint``'s sites.

    Parameters
    ----------
    guide : HierarchicalGaussianGuide
        Gives q_net(z2 | z1) (``guide.posterior_top``), held fixed.
    joint : LatentJoint
        Its sites must be "z1" and "z2"; their order (the model's) lays out the draws.
    loc, scale : (B, d1) tensors
        The Gaussian head of q(z1 | x) that replaces the encoder's.

    Draws are (sample_shape, B, d1 + d2), reparameterized in (loc, scale) and, through z1,
    in q_net's output; ``log_prob`` is the exact log N(z1; loc, scale) + log q_net(z2 | z1).
    """

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, guide: HierarchicalGaussianGuide, joint: LatentJoint,
                 loc: torch.Tensor, scale: torch.Tensor):
        if set(joint.site_names) != {"z1", "z2"}:
            raise UserError(f"the two-layer guide needs a model with latent sites z1 and z2; "
                            f"this one has {', '.join(joint.site_names)}")
        self.guide, self.joint = guide, joint
        self.bottom = dist.Normal(loc, scale).to_event(1)
        super().__init__(loc.shape[:-1], torch.Size([joint.latent_dim]), validate_args=False)

    def rsample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        z1 = self.bottom.rsample(torch.Size(sample_shape))
        return self.joint.join({"z1": z1, "z2": self.guide.posterior_top(z1).rsample()})

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        z = self.joint.split(value)
        return self.bottom.log_prob(z["z1"]) + self.guide.posterior_top(z["z1"]).log_prob(z["z2"])


def guide_family(guide, joint: LatentJoint, loc: torch.Tensor,
                 scale: torch.Tensor) -> dist.Distribution:
    """The member of the guide's family with Gaussian head (loc, scale) in place of the
    encoder's, over ``joint``'s concatenated z: N(loc, diag(scale^2)); pushed through the
    IAF guide's shared flows; or :class:`TwoLayerFamily` for the two-layer guide."""
    if isinstance(guide, HierarchicalGaussianGuide):
        return TwoLayerFamily(guide, joint, loc, scale)
    if len(joint.sites) != 1:
        raise UserError(f"a one-layer guide ({type(guide).__name__}) cannot cover the latent "
                        f"sites {', '.join(joint.site_names)} of this model")
    base = dist.Normal(loc, scale).to_event(1)
    if isinstance(guide, IAFGuide):
        return dist.TransformedDistribution(base, list(guide.flows))
    return base


@torch.no_grad()
def guide_draws(guide, joint: LatentJoint, num: int) -> tuple[torch.Tensor, torch.Tensor]:
    """z (num, B, d) drawn from the amortized guide for ``joint``'s images, concatenated as
    ``joint`` lays them, and log q(z | x) (num, B): the guide run under a particles plate, so
    any guide whose sites are the model's latent sites works (one or two layers)."""
    with pyro.plate("particles", num, dim=-2):
        trace = poutine.trace(guide).get_trace(joint.x)
    trace.compute_log_prob()
    log_q = sum(site["log_prob"] for site in trace.nodes.values()
                if site["type"] == "sample" and not site_is_subsample(site))
    shape = (num, joint.num_images)
    return joint.read(trace, shape), log_q.expand(shape)


def _score(joint: LatentJoint, sample: Callable, eval_particles: int) -> tuple:
    """(elbo, se, log p(x), kept draws) of q from ``eval_particles`` fresh draws."""
    group = max(1, CHUNK_ELEMENTS // (joint.num_images * max(joint.x.shape[1], 1)))
    weights, kept = [], []
    with torch.no_grad():
        for start in range(0, eval_particles, group):
            z, log_q = sample(min(group, eval_particles - start))
            weights.append(joint.log_joint(z) - log_q)
            if sum(k.shape[0] for k in kept) < _KEPT_DRAWS:
                kept.append(z[:_KEPT_DRAWS])
    w = torch.cat(weights)
    se = w.std(0) / math.sqrt(eval_particles) if eval_particles > 1 else torch.zeros_like(w[0])
    draws = torch.cat(kept)[:_KEPT_DRAWS]
    return w.mean(0), se, w.logsumexp(0) - math.log(eval_particles), draws


def fit_local(
    joint: LatentJoint,
    sample: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
    params: Sequence[torch.Tensor],
    steps: int,
    particles: int = 8,
    lr: float = 5e-2,
    eval_particles: int = 1000,
    slow: Sequence[torch.Tensor] = (),
) -> LocalFit:
    """Maximise each image's ELBO over its own parameters by Adam for ``steps`` steps.

    Parameters
    ----------
    joint : LatentJoint
        log p(x, z) of the B images.
    sample : callable
        ``sample(M) -> (z, log q(z))``, shapes (M, B, d) and (M, B), reparameterized in
        ``params``.
    params : sequence of tensors
        The leaf tensors (requires_grad) that define q, each with a leading image dim B.
    steps, particles, lr : int, int, float
        S Adam steps of M reparameterized draws each, at learning rate ``lr``.
    eval_particles : int
        K fresh draws that score the final q.
    slow : sequence of tensors
        More parameters, trained at ``lr * SLOW_LR_RATIO`` (a flow's network weights: at
        the base's rate a 50-D flow's first steps overshoot and its ELBO collapses).
    """
    optimizer = torch.optim.Adam([{"params": list(params)},
                                  {"params": list(slow), "lr": lr * SLOW_LR_RATIO}], lr=lr)
    params = [*params, *slow]
    # large moves first (the encoder's output may be far off), fine ones last: lr decays
    # geometrically to lr * FINAL_LR_RATIO over the S steps
    decay = torch.optim.lr_scheduler.ExponentialLR(optimizer, FINAL_LR_RATIO ** (1 / steps))
    history = []
    for _ in range(steps):
        z, log_q = sample(particles)
        elbo = (joint.log_joint(z) - log_q).mean(0)  # (B,): the images are independent
        # gradients of phi alone: the decoder's weights (and shared flows) get none
        grads = torch.autograd.grad(-elbo.sum(), params)
        for param, grad in zip(params, grads, strict=True):
            param.grad = grad
        optimizer.step()
        decay.step()
        history.append(elbo.detach())
    window = max(1, steps // _LATE_FRACTION)
    if steps >= 2 * window:
        trace = torch.stack(history)
        late_gain = trace[-window:].mean(0) - trace[-2 * window:-window].mean(0)
    else:
        late_gain = torch.full((joint.num_images,), math.nan)
    elbo, se, log_lik, draws = _score(joint, sample, eval_particles)
    return LocalFit(elbo, se, log_lik, late_gain, draws, steps, particles, eval_particles)


def fit_in_chunks(
    model, x: torch.Tensor, fit_chunk: Callable[[LatentJoint, torch.Tensor], LocalFit],
    row_elements: int, bar=None,
) -> LocalFit:
    """``fit_chunk(joint, rows)`` over chunks of the rows of x (N, D), joined into one fit.

    A chunk holds as many images as keep its largest tensors, ``row_elements`` numbers per
    image, within about :data:`~pyro_vae.elbos.importance.CHUNK_ELEMENTS` numbers.
    """
    rows = max(1, CHUNK_ELEMENTS // max(row_elements, 1))
    fits = []
    for chunk in x.split(rows):
        fits.append(fit_chunk(LatentJoint(model, chunk), chunk))
        if bar is not None:
            bar.update(chunk.shape[0])
    first = fits[0]
    join = lambda name, dim=0: torch.cat([getattr(f, name) for f in fits], dim=dim)  # noqa: E731
    return LocalFit(join("elbo"), join("elbo_se"), join("log_likelihood"), join("late_gain"),
                    join("draws", 1), first.steps, first.particles, first.eval_particles)


def refine_gaussian(
    model, guide, x: torch.Tensor, steps: int = 500, particles: int = 8, lr: float = 5e-2,
    eval_particles: int = 1000, bar=None,
) -> LocalFit:
    """q*(z | x): the guide's family with its Gaussian head fitted to each row of x (N, D)
    alone, started at the encoder's output (:func:`fit_local`); draws over the concatenated
    z of :class:`LatentJoint`."""
    def fit_chunk(joint: LatentJoint, rows: torch.Tensor) -> LocalFit:
        loc, scale = gaussian_head(guide, rows)
        loc = loc.clone().requires_grad_(True)
        log_scale = scale.log().clone().requires_grad_(True)

        def sample(m: int) -> tuple[torch.Tensor, torch.Tensor]:
            z = guide_family(guide, joint, loc, log_scale.exp()).rsample((m,))
            # log q at the stopped parameters: the path-derivative ("sticking the landing",
            # Roeder et al., 2017) gradient, whose variance vanishes where q is the posterior
            stopped = guide_family(guide, joint, loc.detach(), log_scale.detach().exp())
            return z, stopped.log_prob(z)

        return fit_local(joint, sample, [loc, log_scale], steps, particles, lr, eval_particles)

    return fit_in_chunks(model, x, fit_chunk, particles * x.shape[1], bar)
