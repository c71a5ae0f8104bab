"""KL divergence between Gaussians in closed form, and its Monte Carlo estimate.

    KL(p || q) = E_p[log p(x) - log q(x)]
               = log(s2 / s1) + (s1^2 + (m1 - m2)^2) / (2 s2^2) - 1/2     (1-D Gaussians)

is >= 0, zero iff p = q, and not symmetric.  The Monte Carlo estimate averages
log p(x_i) - log q(x_i) over x_i ~ p; its standard error shrinks as 1 / sqrt(n).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.distributions import Distribution

__all__ = ["MonteCarloEstimate", "kl_normal", "kl_diag_normal", "kl_monte_carlo",
           "monte_carlo_error"]


def kl_normal(m1, s1, m2, s2) -> torch.Tensor:
    """KL(N(m1, s1^2) || N(m2, s2^2)), elementwise over broadcast tensors."""
    m1, s1, m2, s2 = (torch.as_tensor(t, dtype=torch.get_default_dtype()) if not
                      torch.is_tensor(t) else t for t in (m1, s1, m2, s2))
    return torch.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5


def kl_diag_normal(m1, s1, m2, s2) -> torch.Tensor:
    """KL between diagonal Gaussians: the 1-D terms summed over the last dim, shape (...,)."""
    return kl_normal(m1, s1, m2, s2).sum(-1)


@dataclass
class MonteCarloEstimate:
    """Mean of n i.i.d. terms and its standard error std / sqrt(n)."""

    mean: float
    stderr: float
    num_samples: int


def kl_monte_carlo(p: Distribution, q: Distribution, num_samples: int) -> MonteCarloEstimate:
    """KL(p || q) from ``num_samples`` draws of p (scalar batch shape; any event shape).

    Uses torch's global RNG (seed it, e.g. with ``pyro.set_rng_seed``).
    """
    x = p.sample((num_samples,))
    terms = p.log_prob(x) - q.log_prob(x)
    return MonteCarloEstimate(
        terms.mean().item(), (terms.std() / num_samples**0.5).item(), num_samples
    )


def monte_carlo_error(
    p: Distribution, q: Distribution, sample_sizes: Sequence[int], repeats: int = 100
) -> torch.Tensor:
    """Root-mean-square error of the Monte Carlo KL against ``kl_divergence(p, q)``, per n.

    Returns
    -------
    (len(sample_sizes),) tensor; on log-log axes its slope is -1/2.
    """
    exact = torch.distributions.kl_divergence(p, q)
    errors = []
    for n in sample_sizes:
        x = p.sample((repeats, n))
        estimates = (p.log_prob(x) - q.log_prob(x)).reshape(repeats, n, -1).sum(-1).mean(1)
        errors.append(((estimates - exact) ** 2).mean().sqrt())
    return torch.stack(errors)
