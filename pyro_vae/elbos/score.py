"""The score-function (REINFORCE) ELBO: ``Trace_ELBO`` with no reparameterized sample.

Both estimators of grad_phi E_q[log p(x, z) - log q_phi(z | x)] are unbiased: the
reparameterized one differentiates through z = g(u, phi, x); the score-function one holds
the draw z fixed and takes, per particle,

    (log p(x, z) - log q(z | x)) grad_phi log q(z | x) - grad_phi log q(z | x)

(the second term has mean zero), what Pyro's ``Trace_ELBO`` builds from a guide site whose
``score_parts`` are (log q, log q, 0): a score-function term and no entropy term.  It has
(much) higher variance: the lecture's comparison.

Each latent site's distribution is wrapped, not changed: :class:`ScoreFunction` draws with
``sample`` (no path from z back to phi) and gives the score parts above from the wrapped
distribution's ``log_prob``.  A distribution's own ``score_parts`` are not used: a rejection
sampler's (Pyro's ``Rejector``, ``ShapeAugmentedGamma``) assume its reparameterized draw and
add a correction for the accept step, which with a detached draw would bias the gradient;
log q(z) of the accepted draw is all REINFORCE needs.
"""

from __future__ import annotations

import pyro
import torch
from pyro.distributions.score_parts import ScoreParts
from pyro.distributions.torch_distribution import TorchDistribution
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from .base import EstimatorELBO

__all__ = ["ScoreFunction", "ScoreFunctionMessenger", "ScoreFunctionELBO"]


class ScoreFunction(TorchDistribution):
    """``base_dist`` seen by Pyro's ELBOs as non-reparameterized.

    Same batch and event shapes, support, ``log_prob`` and moments as ``base_dist``;
    ``sample`` is detached and ``score_parts(z)`` is (log q(z), log q(z), 0).

    Parameters
    ----------
    base_dist : TorchDistribution
        Any distribution with ``sample`` and ``log_prob``; it is not modified.
    """

    arg_constraints = {}
    has_rsample = False

    def __init__(self, base_dist):
        self.base_dist = base_dist
        super().__init__(base_dist.batch_shape, base_dist.event_shape, validate_args=False)

    @property
    def support(self):
        return self.base_dist.support

    @property
    def mean(self):
        return self.base_dist.mean

    @property
    def variance(self):
        return self.base_dist.variance

    def expand(self, batch_shape, _instance=None):
        return ScoreFunction(self.base_dist.expand(batch_shape))

    def sample(self, sample_shape=()):
        with torch.no_grad():
            return self.base_dist.sample(sample_shape)

    def log_prob(self, value):
        return self.base_dist.log_prob(value)

    def score_parts(self, value):
        log_prob = self.log_prob(value)
        return ScoreParts(log_prob=log_prob, score_function=log_prob, entropy_term=0)


class ScoreFunctionMessenger(Messenger):
    """Latent sample sites run inside this context draw from :class:`ScoreFunction` wrappers.

    Enter it around the whole ELBO computation: being outermost, it sees each distribution
    after Pyro's plates have expanded it, and the model's sites that the ELBO replays from
    the guide are already done and left alone.  The user's distribution objects are not
    touched (a wrapper replaces the message's ``fn``), so they are the same after a step.
    """

    def _pyro_sample(self, msg):
        if (msg["is_observed"] or msg["done"] or site_is_subsample(msg)
                or isinstance(msg["fn"], ScoreFunction)):
            return
        msg["fn"] = ScoreFunction(msg["fn"])


class ScoreFunctionELBO(EstimatorELBO, pyro.infer.Trace_ELBO):
    """``Trace_ELBO`` with the score-function estimator at every latent site.

    ``loss``, ``loss_and_grads`` (what ``pyro.infer.SVI`` calls) and ``differentiable_loss``
    all compute it (:class:`~pyro_vae.elbos.base.EstimatorELBO`).
    """

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        with ScoreFunctionMessenger():
            return super().differentiable_loss(model, guide, *args, **kwargs)
