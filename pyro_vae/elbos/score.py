"""The score-function (REINFORCE) ELBO: ``Trace_ELBO`` with no reparameterized sample.

Both estimators of grad_phi E_q[log p(x, z) - log q_phi(z | x)] are unbiased: the
reparameterized one differentiates through z = g(u, phi, x); the score-function one is
E_q[(log p(x, z) - log q(z | x)) grad log q(z | x)], what Pyro's ``Trace_ELBO`` builds when a
guide site has no ``rsample``, with (much) higher variance - the lecture's comparison.
"""

from __future__ import annotations

import pyro
import torch
from pyro.poutine.messenger import Messenger

__all__ = ["ScoreFunctionMessenger", "ScoreFunctionELBO"]


class ScoreFunctionMessenger(Messenger):
    """Latent sample sites run inside this context are drawn without ``rsample``.

    The innermost base distribution of each site's distribution (through ``Independent``,
    ``TransformedDistribution``, expansions) gets ``has_rsample_(False)``, so the sample
    is detached and Pyro's ELBOs fall back to the score-function estimator.  Enter it
    around the whole ELBO computation: being outermost, it sees each distribution after
    Pyro's plates have expanded it (an expansion would rebuild ``has_rsample``), and sites
    the ELBO replays from the guide into the model are already done and left alone.
    """

    def _pyro_sample(self, msg):
        if msg["is_observed"] or msg["done"]:
            return
        fn = msg["fn"]
        while hasattr(fn, "base_dist"):
            fn = fn.base_dist
        fn.has_rsample_(False)


class ScoreFunctionELBO(pyro.infer.Trace_ELBO):
    """``Trace_ELBO`` with the score-function estimator at every latent site."""

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        with ScoreFunctionMessenger():
            return super().differentiable_loss(model, guide, *args, **kwargs)

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return self.differentiable_loss(model, guide, *args, **kwargs).item()
