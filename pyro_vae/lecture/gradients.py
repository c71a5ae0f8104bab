"""Score-function versus reparameterized gradients of the ELBO w.r.t. guide parameters.

Both estimate the same gradient of L(phi) = E_q[log p(x, z) - log q_phi(z | x)]:

* reparameterized (pathwise): z = g(u, phi, x), gradient of the integrand through g;
* score function (REINFORCE): E_q[(log p(x, z) - log q(z | x)) grad log q(z | x)],
  what Pyro's ``Trace_ELBO`` builds when a guide site has no ``rsample``.

:class:`~pyro_vae.elbos.score.ScoreFunctionMessenger` switches the guide to the second by
turning ``has_rsample`` off on its sample sites; :func:`compare_gradient_estimators` draws
many independent gradient estimates each way and reports means, standard errors and variances.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from ..elbos import ScoreFunctionMessenger, TraceELBO

__all__ = ["elbo_gradients", "GradientComparison", "compare_gradient_estimators"]


def elbo_gradients(
    model, guide, x: torch.Tensor, params: Sequence[torch.Tensor], *, num_repeats: int,
    num_particles: int = 1, reparameterized: bool = True,
) -> torch.Tensor:
    """``num_repeats`` independent estimates of grad_params ELBO(x), shape (R, P).

    Each estimate averages ``num_particles`` vectorized particles; P is the total number
    of entries of ``params``.  The ELBO is for the batch x (its data plate has size B),
    in nats (higher is better), so these are ascent directions.
    """
    # Pyro's Trace_ELBO, its plate nesting inferred (on a forked generator: same draws)
    elbo = TraceELBO(num_particles=num_particles, vectorize_particles=num_particles > 1)
    estimator = nullcontext() if reparameterized else ScoreFunctionMessenger()
    rows = []
    for _ in range(num_repeats):
        with estimator:
            loss = elbo.differentiable_loss(model, guide, x)
        grads = torch.autograd.grad(-loss, list(params), allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g
                 for p, g in zip(params, grads, strict=True)]
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    return torch.stack(rows)


@dataclass
class GradientComparison:
    """Per-coordinate mean and standard error of each estimator, and their variances, (P,)."""

    mean_reparam: torch.Tensor
    mean_score: torch.Tensor
    stderr_reparam: torch.Tensor
    stderr_score: torch.Tensor
    var_reparam: torch.Tensor
    var_score: torch.Tensor

    @property
    def variance_ratio(self) -> float:
        """Total variance (trace of the covariance) of score function / reparameterized."""
        return (self.var_score.sum() / self.var_reparam.sum()).item()

    @property
    def z_scores(self) -> torch.Tensor:
        """(mean_score - mean_reparam) / joint standard error, per coordinate."""
        return (self.mean_score - self.mean_reparam) / (
            self.stderr_score**2 + self.stderr_reparam**2
        ).sqrt()


def compare_gradient_estimators(
    model, guide, x: torch.Tensor, params: Sequence[torch.Tensor], *, num_repeats: int = 200,
    num_particles: int = 1,
) -> GradientComparison:
    """Draw ``num_repeats`` gradient estimates each way and summarize them."""
    stats = {}
    for name, reparameterized in (("reparam", True), ("score", False)):
        g = elbo_gradients(model, guide, x, params, num_repeats=num_repeats,
                           num_particles=num_particles, reparameterized=reparameterized)
        var = g.var(0)
        stats.update({f"mean_{name}": g.mean(0), f"stderr_{name}": (var / num_repeats).sqrt(),
                      f"var_{name}": var})
    return GradientComparison(**stats)
