"""Maximum likelihood for the 1-D Gaussian family, three ways that must agree.

    mu_hat = (1/N) sum_i x_i,    sigma_hat^2 = (1/N) sum_i (x_i - mu_hat)^2

in closed form (note 1/N: the MLE, not the unbiased 1/(N-1)); by SVI with an
``AutoDelta`` guide on a Pyro model with flat (improper) priors, whose ELBO is then
exactly the log-likelihood; and by Adam on the log-likelihood itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.infer.autoguide import AutoDelta, init_to_value

__all__ = ["GaussianFit", "gaussian_mle", "gaussian_mle_autodelta", "gaussian_mle_adam"]


@dataclass
class GaussianFit:
    """Fitted N(mu, sigma2)."""

    mu: float
    sigma2: float

    def sample(self, num_samples: int) -> torch.Tensor:
        """x' ~ N(mu, sigma2), shape (num_samples,): new data from the fitted model."""
        return dist.Normal(self.mu, self.sigma2**0.5).sample((num_samples,))

    def log_likelihood(self, x: torch.Tensor) -> float:
        """Mean log N(x_i; mu, sigma2) over the points of x (N,)."""
        return dist.Normal(self.mu, self.sigma2**0.5).log_prob(x).mean().item()


def gaussian_mle(x: torch.Tensor) -> GaussianFit:
    """Closed-form MLE for x of shape (N,)."""
    mu = x.mean()
    return GaussianFit(mu.item(), ((x - mu) ** 2).mean().item())


def _flat_prior_model(x: torch.Tensor) -> None:
    # improper flat priors: the joint density equals the likelihood, so MAP = MLE
    mu = pyro.sample("mu", dist.ImproperUniform(constraints.real, (), ()))
    sigma = pyro.sample("sigma", dist.ImproperUniform(constraints.positive, (), ()))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Normal(mu, sigma), obs=x)


def gaussian_mle_autodelta(
    x: torch.Tensor, *, steps: int = 1000, lr: float = 0.1, lr_decay: float = 0.995
) -> GaussianFit:
    """The MLE as MAP under flat priors: ``AutoDelta`` + ``SVI`` + ``ClippedAdam``.

    The learning rate decays by ``lr_decay`` per step so Adam settles on the optimum
    instead of hovering around it.  Runs in a fresh param-store scope: the caller's
    store is neither read nor changed.
    """
    start = {"mu": torch.zeros((), dtype=x.dtype), "sigma": torch.ones((), dtype=x.dtype)}
    with pyro.get_param_store().scope():
        guide = AutoDelta(_flat_prior_model, init_loc_fn=init_to_value(values=start))
        svi = pyro.infer.SVI(
            _flat_prior_model, guide, pyro.optim.ClippedAdam({"lr": lr, "lrd": lr_decay}),
            pyro.infer.Trace_ELBO(),
        )
        for _ in range(steps):
            svi.step(x)
        values = guide.median()
    return GaussianFit(values["mu"].item(), values["sigma"].item() ** 2)


def gaussian_mle_adam(
    x: torch.Tensor, *, steps: int = 1000, lr: float = 0.1, lr_decay: float = 0.995
) -> GaussianFit:
    """Maximize sum_i log N(x_i; mu, exp(log_sigma)^2) with torch Adam (decaying lr)."""
    mu = torch.zeros((), dtype=x.dtype, requires_grad=True)
    log_sigma = torch.zeros((), dtype=x.dtype, requires_grad=True)
    optimizer = torch.optim.Adam([mu, log_sigma], lr=lr)
    schedule = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=lr_decay)
    for _ in range(steps):
        # mean, not sum: the same optimum, and Adam's step size does not depend on N
        loss = -dist.Normal(mu, log_sigma.exp()).log_prob(x).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return GaussianFit(mu.item(), log_sigma.exp().item() ** 2)
