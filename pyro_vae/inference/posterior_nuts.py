"""Posterior draws of z | x by NUTS with the decoder fixed: the reference the q's are held to.

For one image x, NUTS (Hoffman & Gelman, 2014; Pyro's implementation) samples

    p(z | x)  proportional to  p(z) p(x | z)

through the potential U(z) = -log p(x, z) of :class:`~.latent_joint.LatentJoint`, z every
latent site concatenated ((z2, z1) for two stochastic layers, sampled jointly).  Its
draws give the posterior's mean and covariance, to hold q's and q*'s against, and its
chains' split R-hat and effective sample size say whether they can be trusted.  The
chains run one after another, each started at the encoder's mean (where the posterior
mass is, for a trained encoder), from one random stream seeded once by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pyro.infer import MCMC, NUTS

from ..progress import live_bars
from .diagnostics import check_draws, ess_and_rhat
from .latent_joint import LatentJoint

__all__ = ["PosteriorDraws", "posterior_nuts"]


@dataclass
class PosteriorDraws:
    """NUTS draws of z | x for one image, and their summaries.

    Attributes
    ----------
    draws : (C, S, d) tensor
        S draws from each of C chains.
    mean : (d,) tensor
    cov : (d, d) tensor
        Over all C * S draws.
    ess, r_hat : (d,) tensors
        Per coordinate, over chains (:func:`~.diagnostics.ess_and_rhat`).
    divergences : int
        Divergent transitions after warm-up, over all chains.
    """

    draws: torch.Tensor
    mean: torch.Tensor
    cov: torch.Tensor
    ess: torch.Tensor
    r_hat: torch.Tensor
    divergences: int


def posterior_nuts(
    model, x: torch.Tensor, init: torch.Tensor, samples: int = 200, warmup: int = 200,
    chains: int = 2,
) -> PosteriorDraws:
    """NUTS on z | x for the single image x (D,), ``chains`` chains started at ``init`` (d,),
    z and d as :class:`~.latent_joint.LatentJoint` concatenates them.

    ``samples`` and ``warmup`` are per chain (warm-up adapts the step size and a diagonal
    mass matrix, Pyro's defaults).
    """
    check_draws(samples)
    joint = LatentJoint(model, x.unsqueeze(0))

    def potential(params: dict[str, torch.Tensor]) -> torch.Tensor:
        return -joint.log_joint(params["z"].reshape(1, 1, -1)).sum()

    runs, divergences = [], 0
    for _ in range(chains):
        # one MCMC per chain: Pyro's own num_chains > 1 runs them in parallel processes
        mcmc = MCMC(NUTS(potential_fn=potential), num_samples=samples, warmup_steps=warmup,
                    initial_params={"z": init.detach().clone()},
                    disable_progbar=not live_bars())
        mcmc.run()
        runs.append(mcmc.get_samples()["z"])
        divergences += len(mcmc.diagnostics()["divergences"]["chain 0"])
    draws = torch.stack(runs)
    flat = draws.reshape(-1, draws.shape[-1])
    ess, r_hat = ess_and_rhat(draws)
    return PosteriorDraws(draws, flat.mean(0), flat.T.cov(), ess, r_hat, divergences)
