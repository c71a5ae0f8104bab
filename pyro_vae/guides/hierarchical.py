"""The guide of the two-layer VAE: q(z1, z2 | x) = q(z1 | x) q(z2 | z1) (Burda et al., 2016).

    z1 ~ N(m1(x), diag(s1(x)^2))       (B, d1), (m1, log s1) = encoder(x)
    z2 ~ N(m2(z1), diag(s2(z1)^2))     (B, d2), (m2, log s2) = upper(z1)

both inside the plate "data", sampled in that order (bottom-up), each reparameterized.

Why q(z1 | x) is a :class:`MonteCarloKLNormal`: the model's partner of z1 is p(z1 | z2),
whose parameters depend on z2, which this guide draws *after* z1 and from it.  The ELBO's
z1 term is E_{q(z1|x) q(z2|z1)}[log q(z1|x) - log p(z1|z2)]; the closed form
KL(q(z1|x) || p(z1|z2)) at one sampled z2 averages z1 as if it were independent of z2, a
different (biased) quantity.  ``kl_divergence`` therefore declines that pair, and every
estimator that takes the closed form where it is registered (``meanfield``, free bits, the
choice of ``auto``) falls back to Monte Carlo at z1, while z2's term
KL(q(z2|z1) || p(z2)) (p(z2) depending on nothing) stays in closed form.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.distributions import Normal
from torch.distributions.kl import register_kl

__all__ = ["HierarchicalGaussianGuide", "MonteCarloKLNormal"]


class MonteCarloKLNormal(dist.Normal):
    """A Normal whose KL divergence to any Normal is not given in closed form.

    Same samples and log-densities as :class:`pyro.distributions.Normal`; only
    ``kl_divergence(self, Normal)`` raises ``NotImplementedError``, which Pyro's mean-field
    ELBO reads as "estimate this site by Monte Carlo".  See the module docstring for why.
    """


# registered against torch's Normal (the base of Pyro's): the most specific match for
# (MonteCarloKLNormal, any Normal) in both of torch's lookup orders, so no ambiguity warning
@register_kl(MonteCarloKLNormal, Normal)
def _no_closed_form_kl(p, q):
    raise NotImplementedError(
        "q(z1 | x) is drawn before the z2 that p(z1 | z2) depends on: the KL is estimated by "
        "Monte Carlo"
    )


class HierarchicalGaussianGuide(nn.Module):
    """q(z1 | x) q(z2 | z1), both diagonal Gaussians with exp scales; ``forward`` is the guide.

    Parameters
    ----------
    encoder : nn.Module
        Maps x (..., D) to (..., 2 * d1): the mean and the log-scale of q(z1 | x).
    upper : nn.Module
        Maps z1 (..., d1) to (..., 2 * d2): the mean and the log-scale of q(z2 | z1).
    """

    def __init__(self, encoder: nn.Module, upper: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.upper = upper

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loc, scale) of q(z1 | x), each (..., d1), for x of shape (..., D)."""
        loc, log_scale = self.encoder(x).chunk(2, dim=-1)
        return loc, log_scale.exp()

    def posterior(self, x: torch.Tensor) -> dist.Distribution:
        """q(z1 | x) with batch shape x.shape[:-1] and event shape (d1,)."""
        return MonteCarloKLNormal(*self.encode(x)).to_event(1)

    def posterior_top(self, z1: torch.Tensor) -> dist.Distribution:
        """q(z2 | z1) with batch shape z1.shape[:-1] and event shape (d2,)."""
        loc, log_scale = self.upper(z1).chunk(2, dim=-1)
        return dist.Normal(loc, log_scale.exp()).to_event(1)

    def forward(self, x: torch.Tensor, *, n: int | None = None) -> torch.Tensor:
        """Sample z1 (B, d1) and z2 (B, d2) for the batch x (B, D) of a data set of size n.

        Returns z1, the code the decoder reads.  Under an outer particle plate at dim -2
        the draws get a leading (K,) dimension and q(z2 | z1) follows each particle's z1.
        """
        # its own name in the param store: a one-layer guide's "guide" entries stay apart
        pyro.module("hierarchical_guide", self)
        batch = x.shape[0]
        with pyro.plate("data", size=n or batch, subsample_size=batch):
            z1 = pyro.sample("z1", self.posterior(x))
            pyro.sample("z2", self.posterior_top(z1))
            return z1
