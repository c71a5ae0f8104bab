"""The one base every registered ELBO derives from: the estimator is ``differentiable_loss``.

``pyro.infer.SVI`` calls ``loss_and_grads``, ``fit`` and ``ELBOModule`` call
``differentiable_loss``, evaluation calls ``loss``.  A subclass that overrides only one of
them (as a wrapper that switches the estimator inside ``differentiable_loss`` would) hands
the others a different estimator, silently.  :class:`EstimatorELBO` derives the other two
from ``differentiable_loss``, so all three compute the same estimator:

    loss()           = differentiable_loss() as a float, without building a graph
    loss_and_grads() = differentiable_loss() as a float, after ``backward`` on it

``max_plate_nesting`` is inferred, when not given, by Pyro's guess (one run of the guide
and the model); the guess runs on a forked random number generator, so inferring it does
not shift the draws of the run (a fused and a plain ELBO draw the same numbers).

:class:`TraceELBO`, :class:`MeanFieldELBO` and :class:`EnumELBO` are Pyro's
``Trace_ELBO``, ``TraceMeanField_ELBO`` and ``TraceEnum_ELBO`` on this base.
"""

from __future__ import annotations

import logging

import pyro
import torch
from pyro.infer.util import torch_item

from ..rng import forked_rng

# Pyro announces each guess of the plate nesting at INFO on stderr: a line per fit, for a
# number the user did not ask for
_GUESS_LOG = logging.getLogger("pyro.infer.elbo")

__all__ = ["EstimatorELBO", "TraceELBO", "MeanFieldELBO", "EnumELBO", "plate_nesting"]


def plate_nesting(max_plate_nesting: int | None) -> float:
    """Pyro's ``max_plate_nesting`` argument: ``float("inf")`` (Pyro infers it) for None."""
    return float("inf") if max_plate_nesting is None else max_plate_nesting


class EstimatorELBO(pyro.infer.ELBO):
    """An ELBO whose ``loss`` and ``loss_and_grads`` are its ``differentiable_loss``.

    A subclass defines ``differentiable_loss(model, guide, *args, **kwargs)``: a scalar
    tensor whose value is -ELBO (or -bound) in nats and whose gradient is the estimator's.
    Listed first among the bases (``class X(EstimatorELBO, pyro.infer.Trace_ELBO)``), it
    replaces the parent's ``loss`` and ``loss_and_grads`` and keeps its traces.
    """

    def loss(self, model, guide, *args, **kwargs) -> float:
        """-ELBO (nats) as a float: the value of ``differentiable_loss``, without a graph."""
        with torch.no_grad():
            return torch_item(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        """-ELBO (nats) as a float; the estimator's gradients are accumulated in ``.grad``."""
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        if getattr(loss, "requires_grad", False):  # without parameters, nothing to differentiate
            loss.backward(retain_graph=self.retain_graph)
        return torch_item(loss)

    def _guess_max_plate_nesting(self, model, guide, args, kwargs):
        # the guess runs the pair once: on a forked generator it leaves the run's draws alone
        level = _GUESS_LOG.level
        _GUESS_LOG.setLevel(logging.WARNING)
        try:
            with forked_rng(*args):
                super()._guess_max_plate_nesting(model, guide, args, kwargs)
        finally:
            _GUESS_LOG.setLevel(level)


class TraceELBO(EstimatorELBO, pyro.infer.Trace_ELBO):
    """Pyro's ``Trace_ELBO`` (registry name ``trace``)."""


class MeanFieldELBO(EstimatorELBO, pyro.infer.TraceMeanField_ELBO):
    """Pyro's ``TraceMeanField_ELBO`` (registry names ``meanfield`` and ``auto``)."""


class EnumELBO(EstimatorELBO, pyro.infer.TraceEnum_ELBO):
    """Pyro's ``TraceEnum_ELBO`` (registry name ``enum``).

    Its ``differentiable_loss`` refuses a result without a graph (as under ``no_grad``), so
    ``loss`` is Pyro's own: the same dice estimate, evaluated without one.
    """

    loss = pyro.infer.TraceEnum_ELBO.loss
