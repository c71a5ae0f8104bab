"""MCMC diagnostics of draws laid out (chain, draw, ...): effective sample size and split R-hat."""

from __future__ import annotations

import torch
from pyro.ops.stats import effective_sample_size, split_gelman_rubin

from ..errors import UserError

__all__ = ["MIN_DRAWS", "check_draws", "ess_and_rhat"]

MIN_DRAWS = 4  # split R-hat halves each chain and needs two draws in each half


def check_draws(num_samples: int) -> None:
    """A :class:`UserError` unless NUTS is asked for enough draws per chain to diagnose."""
    if num_samples < MIN_DRAWS:
        raise UserError(f"NUTS needs at least {MIN_DRAWS} draws per chain for its R-hat, got "
                        f"{num_samples}; ask for more samples (draws)")


def ess_and_rhat(draws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Effective sample size and split Gelman-Rubin R-hat of each entry of ``draws``.

    Parameters
    ----------
    draws : (C, S, ...) tensor
        S draws from each of C chains (C = 1 gives the single chain's split R-hat).

    Returns
    -------
    (ess, r_hat), each of shape ``draws.shape[2:]``.
    """
    return (effective_sample_size(draws, chain_dim=0, sample_dim=1),
            split_gelman_rubin(draws, chain_dim=0, sample_dim=1))
