"""Annealed importance sampling of log p(x) for a fixed decoder (Neal, 2001; Wu et al., 2017).

The chain moves z from the prior p_0(z) = p(z) to the posterior p_T(z) = p(z | x) through
the geometric path of unnormalised densities

    f_t(z) = p(z) p(x | z)^beta_t,      0 = beta_0 < beta_1 < ... < beta_T = 1,

with one Hamiltonian Monte Carlo transition (L leapfrog steps, identity mass, a
Metropolis test) leaving each f_t invariant.  Each chain's log weight

    log w = sum_{t=1..T} (beta_t - beta_{t-1}) log p(x | z_{t-1})

has E[w] = Z_T / Z_0 = p(x), so over C chains

    log p(x) ~= logsumexp_c log w_c - log C,

a stochastic lower bound (Jensen) that tightens as T grows, whatever the encoder (it is
not used).  Run backwards from an exact posterior sample, which simulated data provide,
the same sum estimates 1 / p(x), and minus its log-mean-exp is a stochastic upper bound:
the two make the bidirectional Monte Carlo sandwich (Grosse et al., 2015; :func:`bdmc`).

z is every latent site of the model concatenated (:class:`LatentJoint`; (z2, z1) for two
stochastic layers), so each chain moves all layers at once.  Every image and chain runs at
once, (C, B, d) in the layout of :class:`LatentJoint`; each keeps its own step size,
adapted towards an acceptance rate of 0.65 as the chain goes, as Wu et al. (2017) do.
Strictly, a step size that follows the chain's last accept or reject makes each kernel
depend on the state it moves, which can bias the weights; against the exact log p(x) of
probabilistic PCA (tests/test_gaps.py) the bias was below the Monte Carlo noise (0.02
nats at T = 300) and no larger than with a fixed step size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from pyro import poutine

from ..elbos.importance import CHUNK_ELEMENTS
from ..errors import UserError
from ..progress import progress_bar
from .latent_joint import LatentJoint

__all__ = [
    "TARGET_ACCEPTANCE",
    "AISEstimate",
    "sigmoid_schedule",
    "ais",
    "ais_log_likelihood",
    "bdmc",
]

TARGET_ACCEPTANCE = 0.65  # Wu et al. (2017): HMC's acceptance rate in their AIS chains
_ADAPT_RATE = 0.2  # log step-size change per transition, split between accept and reject
_STEP_SIZE_RANGE = (1e-4, 1.0)


@dataclass
class AISEstimate:
    """Per-image results of one annealing run.

    Attributes
    ----------
    log_likelihood : (B,) tensor
        log-mean-exp of the chains' log weights: log p(x) (forward), -log p(x) (reverse).
    log_weights : (C, B) tensor
    acceptance : (B,) tensor
        HMC's acceptance rate, averaged over transitions and chains.
    steps, chains, leapfrog : int
        T, C and L.
    """

    log_likelihood: torch.Tensor
    log_weights: torch.Tensor
    acceptance: torch.Tensor
    steps: int
    chains: int
    leapfrog: int


def sigmoid_schedule(steps: int, radius: float = 4.0) -> torch.Tensor:
    """beta_0..beta_T, shape (T + 1,): the sigmoidal schedule of Grosse et al. (2015).

    beta_t = (s(r (2t/T - 1)) - s(-r)) / (s(r) - s(-r)), s the logistic function: small
    steps at both ends, where the log weight increments vary most.
    """
    if steps < 1:
        raise UserError(f"AIS needs at least 1 annealing step, got {steps}")
    grid = torch.sigmoid(torch.linspace(-radius, radius, steps + 1, dtype=torch.float64))
    betas = (grid - grid[0]) / (grid[-1] - grid[0])
    return betas.to(torch.get_default_dtype())


def _target(joint: LatentJoint, z: torch.Tensor, beta: float):
    """log f_beta(z) and its gradient in z, and log p(x | z); (C, B), (C, B, d), (C, B)."""
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        log_prior, log_lik = joint.log_terms(z)
        target = log_prior + beta * log_lik
        (grad,) = torch.autograd.grad(target.sum(), z)
    return target.detach(), grad, log_lik.detach()


def _hmc(joint: LatentJoint, z, target, grad, beta: float, step_size, leapfrog: int):
    """One HMC transition of every chain; the new z and whether each was accepted (C, B)."""
    momentum = torch.randn_like(z)
    p = momentum + 0.5 * step_size * grad
    z_new, finite = z, torch.ones_like(target, dtype=torch.bool).unsqueeze(-1)
    for i in range(leapfrog):
        z_new = z_new + step_size * p
        finite = finite & torch.isfinite(z_new).all(-1, keepdim=True)
        # a diverged trajectory is rejected below; the model never sees a non-finite z
        z_new = torch.where(finite, z_new, z)
        target_new, grad_new, _ = _target(joint, z_new, beta)
        p = p + (step_size if i < leapfrog - 1 else 0.5 * step_size) * grad_new
    log_accept = (target_new - 0.5 * p.pow(2).sum(-1)) - (target - 0.5 * momentum.pow(2).sum(-1))
    accepted = (torch.rand_like(log_accept).log() < log_accept) & finite.squeeze(-1)
    return torch.where(accepted.unsqueeze(-1), z_new, z), accepted


@torch.no_grad()
def ais(
    joint: LatentJoint,
    betas: torch.Tensor,
    chains: int = 4,
    leapfrog: int = 5,
    step_size: float = 0.1,
    init: torch.Tensor | None = None,
    bar=None,
) -> AISEstimate:
    """Anneal ``chains`` chains per image along ``betas``; their log weights.

    Parameters
    ----------
    joint : LatentJoint
        log p(z) and log p(x | z) for the B images.
    betas : (T + 1,) tensor
        The schedule, from 0 to 1 (forward) or from 1 to 0 (reverse, with ``init``).
    chains, leapfrog : int
        C chains per image; L leapfrog steps per transition.
    step_size : float
        The initial leapfrog step, adapted per chain and image.
    init : (C, B, d) tensor, optional
        Where the chains start: samples of f_{beta_0}; default z ~ p(z) (beta_0 = 0).
    bar : progress bar, optional
        Updated once per transition.
    """
    z = joint.sample_prior(chains) if init is None else init
    eps = z.new_full((*z.shape[:-1], 1), step_size)
    log_w = z.new_zeros(z.shape[:-1])
    accepted = z.new_zeros(z.shape[:-1])
    steps = len(betas) - 1
    for t in range(1, steps + 1):
        beta = float(betas[t])
        target, grad, log_lik = _target(joint, z, beta)
        log_w += (beta - float(betas[t - 1])) * log_lik
        if t == steps:  # the last weight is in; no transition is needed after it
            break
        z, ok = _hmc(joint, z, target, grad, beta, eps, leapfrog)
        accepted += ok
        # towards TARGET_ACCEPTANCE: up by rate (1 - a*) on accept, down by rate a* on reject
        change = torch.where(ok, 1.0 - TARGET_ACCEPTANCE, -TARGET_ACCEPTANCE) * _ADAPT_RATE
        eps = (eps * change.exp().unsqueeze(-1)).clamp(*_STEP_SIZE_RANGE)
        if bar is not None:
            bar.update(1)
    estimate = log_w.logsumexp(0) - math.log(chains)
    rate = accepted.mean(0) / max(steps - 1, 1)
    return AISEstimate(estimate, log_w, rate, steps, chains, leapfrog)


def ais_log_likelihood(
    model, x: torch.Tensor, steps: int = 500, chains: int = 4, leapfrog: int = 5,
    step_size: float = 0.1, progress: bool = False,
) -> AISEstimate:
    """log p(x) for every row of x (N, D) by forward AIS with T = ``steps``, in chunks of rows
    that bound each tensor to about :data:`~pyro_vae.elbos.importance.CHUNK_ELEMENTS` numbers.
    """
    betas = sigmoid_schedule(steps)
    rows = max(1, CHUNK_ELEMENTS // (chains * max(x.shape[1], 1)))
    chunks = x.split(rows)
    bar = progress_bar(len(chunks) * (steps - 1), f"AIS with T={steps}", progress)
    parts = [ais(LatentJoint(model, chunk), betas, chains, leapfrog, step_size, bar=bar)
             for chunk in chunks]
    bar.close()
    return AISEstimate(
        torch.cat([p.log_likelihood for p in parts]),
        torch.cat([p.log_weights for p in parts], dim=1),
        torch.cat([p.acceptance for p in parts]),
        steps, chains, leapfrog,
    )


@torch.no_grad()
def bdmc(
    model, num_images: int, steps: int = 500, chains: int = 4, leapfrog: int = 5,
    step_size: float = 0.1,
) -> tuple[torch.Tensor, AISEstimate, AISEstimate]:
    """Bidirectional Monte Carlo on data simulated from the model: a sandwich of log p(x).

    (z_i, x_i) ~ p(z) p(x | z) for i < ``num_images``; z_i is an exact sample of p(z | x_i).
    Forward AIS from the prior gives a stochastic lower bound of log p(x_i); reverse AIS
    started at z_i (the same schedule backwards) estimates 1 / p(x_i), and minus its
    log-mean-exp is a stochastic upper bound.  The gap between the two bounds the error of
    either AIS estimate on data like these.

    Returns
    -------
    x : (num_images, D) tensor
        The simulated images.
    lower, upper : AISEstimate
        ``upper.log_likelihood`` is already the upper bound (the reverse estimate negated).
    """
    trace = poutine.trace(model).get_trace(None, n=num_images)
    x = trace.nodes["x"]["value"]
    joint = LatentJoint(model, x)
    z = joint.read(trace)
    betas = sigmoid_schedule(steps)
    lower = ais(joint, betas, chains, leapfrog, step_size)
    reverse = ais(joint, betas.flip(0), chains, leapfrog, step_size,
                  init=z.expand(chains, *z.shape).clone())
    reverse.log_likelihood = -reverse.log_likelihood
    return x, lower, reverse
