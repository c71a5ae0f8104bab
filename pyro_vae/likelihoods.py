"""Likelihoods p(x | z) given the decoder's output, chosen by name from :data:`LIKELIHOODS`.

A likelihood is an ``nn.Module`` with ``decoder_features(data_dim)`` (how many
outputs the decoder needs) and ``forward(decoder_output)`` returning a
distribution with event shape (data_dim,) whose ``mean`` is E[x | z].  A factory
is called with the keyword arguments its signature names, out of ``data_dim``,
``binary_data`` and the ``[likelihood]`` config entries (``scale``,
``learn_scale``, ``epsilon``).

Only ``bernoulli`` on binary pixels gives log-probabilities (of a discrete
outcome).  ``continuous_bernoulli``, ``gaussian`` and ``beta`` give densities on
[0, 1] or the real line: their nats are not comparable with Bernoulli nats, nor
with each other's on different data.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from .registry import Registry

__all__ = [
    "LIKELIHOODS",
    "BernoulliLikelihood",
    "ContinuousBernoulli",
    "ContinuousBernoulliLikelihood",
    "GaussianLikelihood",
    "ClampedBeta",
    "BetaLikelihood",
    "MIN_GAUSSIAN_SCALE",
    "BETA_EPSILON",
]

LIKELIHOODS = Registry("likelihood")

# the standard deviation of a uniform variable over one grey level (1/255 wide): a learned
# pixel scale below this would reward reproducing the quantisation of the data exactly
MIN_GAUSSIAN_SCALE = 1.0 / (255.0 * math.sqrt(12.0))
# half a grey level: 0 and 1 move to the midpoints between them and their neighbours 1/255
# and 254/255, so the Beta density (infinite or zero at the ends) stays finite on MNIST
BETA_EPSILON = 1.0 / 510.0
# below this |logit| the closed forms of the continuous Bernoulli lose float32 precision
_SMALL_LOGIT = 1e-2


class BernoulliLikelihood(nn.Module):
    """Factorized Bernoulli with logits from the decoder: log p(x|z) = -BCE(x, sigmoid(logits)).

    Parameters
    ----------
    binary_data : bool
        ``False`` admits grey levels in [0, 1] (``--binarize none``): the "log-likelihood"
        is then minus the cross-entropy, not the log-probability of any distribution.
    """

    def __init__(self, binary_data: bool = True):
        super().__init__()
        self.binary_data = binary_data

    @staticmethod
    def decoder_features(data_dim: int) -> int:
        return data_dim

    def forward(self, logits: torch.Tensor) -> dist.Distribution:
        # validate_args=None defers to Pyro's global validation setting
        validate = None if self.binary_data else False
        return dist.Bernoulli(logits=logits, validate_args=validate).to_event(1)


LIKELIHOODS.register("bernoulli")(BernoulliLikelihood)


class ContinuousBernoulli(dist.ContinuousBernoulli):
    """The continuous Bernoulli (Loaiza-Ganem & Cunningham, 2019) with exact normalizer in logits.

    p(x | eta) = C(eta) sigmoid(eta)^x (1 - sigmoid(eta))^(1 - x) on [0, 1], with

        C(eta) = eta / tanh(eta / 2),   log C -> log 2 + eta^2 / 12 as eta -> 0.

    ``torch.distributions.ContinuousBernoulli`` evaluates C through probabilities
    clamped to [eps, 1 - eps], so for |logit| > ~16 (sharp decoders reach that) its
    normalizer is wrong by log(|eta| / 16) while its cross-entropy term uses the
    full logit: this class computes the normalizer, mean and inverse CDF from the
    logits directly.  Construct it with ``logits=``.
    """

    def _cont_bern_log_norm(self) -> torch.Tensor:
        a = self.logits.abs()
        small = a < _SMALL_LOGIT
        a_safe = torch.where(small, torch.ones_like(a), a)
        # log(a / tanh(a / 2)) = log a + log(1 + e^-a) - log(1 - e^-a), all terms stable for a > 0
        exact = a_safe.log() + torch.log1p(torch.exp(-a_safe)) - torch.log(-torch.expm1(-a_safe))
        return torch.where(small, math.log(2.0) + a.pow(2) / 12.0, exact)

    @property
    def mean(self) -> torch.Tensor:
        eta = self.logits
        small = eta.abs() < _SMALL_LOGIT
        eta_safe = torch.where(small, torch.ones_like(eta), eta)
        # E[x] = 1 / (1 - e^-eta) - 1 / eta
        exact = -1.0 / torch.expm1(-eta_safe) - 1.0 / eta_safe
        return torch.where(small, 0.5 + eta / 12.0, exact)

    def icdf(self, value: torch.Tensor) -> torch.Tensor:
        # solve (e^(eta x) - 1) / (e^eta - 1) = u on the side eta >= 0, where e^-|eta| cannot
        # overflow, and use the symmetry x(eta, u) = 1 - x(-eta, 1 - u) for eta < 0
        eta = self.logits
        positive = eta >= 0
        a = eta.abs()
        small = a < _SMALL_LOGIT
        a_safe = torch.where(small, torch.ones_like(a), a)
        v = torch.where(positive, value, 1.0 - value)
        y = 1.0 + torch.log(v + (1.0 - v) * torch.exp(-a_safe)) / a_safe
        y = torch.where(small, v + a * v * (1.0 - v) / 2.0, y)
        return torch.where(positive, y, 1.0 - y)


class ContinuousBernoulliLikelihood(nn.Module):
    """Factorized continuous Bernoulli, logits from the decoder: a proper density on [0, 1]^D."""

    @staticmethod
    def decoder_features(data_dim: int) -> int:
        return data_dim

    def forward(self, logits: torch.Tensor) -> dist.Distribution:
        return ContinuousBernoulli(logits=logits).to_event(1)


LIKELIHOODS.register("continuous_bernoulli")(ContinuousBernoulliLikelihood)


class GaussianLikelihood(nn.Module):
    """x | z ~ N(sigmoid(decoder(z)), diag(sigma^2)): mean in (0, 1), sigma fixed or per pixel.

    Parameters
    ----------
    data_dim : int
    scale : float
        sigma, or its initial value when learned.
    learn_scale : bool
        Learn one sigma per pixel, shape (data_dim,), kept above :data:`MIN_GAUSSIAN_SCALE`.
    """

    def __init__(self, data_dim: int, scale: float = 0.1, learn_scale: bool = False):
        super().__init__()
        if scale <= MIN_GAUSSIAN_SCALE:
            raise ValueError(f"likelihood.scale must be > {MIN_GAUSSIAN_SCALE:.2g}, got {scale}")
        # sigma = floor + softplus(raw); raw = softplus^-1(scale - floor) starts at sigma = scale
        excess = torch.full((data_dim,), scale - MIN_GAUSSIAN_SCALE)
        raw = excess + torch.log(-torch.expm1(-excess))
        if learn_scale:
            self.raw_scale = nn.Parameter(raw)
        else:
            self.register_buffer("raw_scale", raw)

    @staticmethod
    def decoder_features(data_dim: int) -> int:
        return data_dim

    def forward(self, output: torch.Tensor) -> dist.Distribution:
        scale = MIN_GAUSSIAN_SCALE + F.softplus(self.raw_scale)
        return dist.Normal(torch.sigmoid(output), scale).to_event(1)


LIKELIHOODS.register("gaussian")(GaussianLikelihood)


class ClampedBeta(dist.Beta):
    """Beta density evaluated at x clamped to [epsilon, 1 - epsilon].

    The Beta density is 0 or infinite at exactly 0 and 1, where most MNIST pixels
    lie; the model is therefore one for clamp(x, eps, 1 - eps), and ``log_prob``
    applies the clamp itself so that the data tensors stay untouched.
    """

    def __init__(self, concentration1, concentration0, epsilon: float = BETA_EPSILON, **kwargs):
        self.epsilon = epsilon
        super().__init__(concentration1, concentration0, **kwargs)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(ClampedBeta, _instance)
        new = super().expand(batch_shape, _instance=new)
        new.epsilon = self.epsilon
        return new

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return super().log_prob(value.clamp(self.epsilon, 1.0 - self.epsilon))


class BetaLikelihood(nn.Module):
    """x | z ~ prod_d Beta(a_d, b_d) on grey levels, (a, b) = softplus(decoder(z)) + 1e-3.

    Parameters
    ----------
    epsilon : float
        Data are clamped to [epsilon, 1 - epsilon] (default :data:`BETA_EPSILON`).
    """

    def __init__(self, epsilon: float = BETA_EPSILON):
        super().__init__()
        self.epsilon = epsilon

    @staticmethod
    def decoder_features(data_dim: int) -> int:
        return 2 * data_dim

    def forward(self, output: torch.Tensor) -> dist.Distribution:
        # the floor keeps softplus of very negative outputs from underflowing to 0
        a, b = (F.softplus(output) + 1e-3).chunk(2, dim=-1)
        return ClampedBeta(a, b, epsilon=self.epsilon).to_event(1)


LIKELIHOODS.register("beta")(BetaLikelihood)
