"""``TraceGraph_ELBO`` in the form ``fit`` needs: a ``differentiable_loss``.

Pyro's graph ELBO gives Rao-Blackwellized score-function terms (with baselines where a
guide site asks for them) through a surrogate loss; ``fit`` back-propagates
``differentiable_loss``, whose value here is -ELBO and whose gradient is the surrogate's,
and ``loss`` and ``loss_and_grads`` are derived from it (:mod:`.base`).
"""

from __future__ import annotations

import pyro
import torch

from .base import EstimatorELBO

__all__ = ["GraphELBO"]


class GraphELBO(EstimatorELBO, pyro.infer.TraceGraph_ELBO):
    """``TraceGraph_ELBO`` with ``differentiable_loss``: value -ELBO, gradient its surrogate's."""

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        elbo, surrogate_loss = self._loss_and_surrogate_loss(model, guide, args, kwargs)
        # value of -ELBO, gradient of the surrogate (which includes any baseline loss)
        return surrogate_loss + (-elbo - surrogate_loss).detach()
