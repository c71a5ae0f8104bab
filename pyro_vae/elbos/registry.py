"""Every ELBO by name: the registry ``fit`` and the command line choose from.

Adding an estimator is one function returning it plus one ``@ELBOS.register`` line.
Each takes ``num_particles`` and ``max_plate_nesting`` (None: inferred); the result is a
``pyro.infer.ELBO`` (here an :class:`~pyro_vae.elbos.base.EstimatorELBO`), so it is the
``loss=`` of ``pyro.infer.SVI`` as well as ``fit``'s estimator: its
``differentiable_loss(model, guide, x, n=N)`` is -ELBO in nats for the full data set of N
points, and ``loss`` and ``loss_and_grads`` are that same estimator.

``auto`` is what ``TraceMeanField_ELBO`` does, the closed-form KL where registered and Monte
Carlo elsewhere, site by site; :func:`resolve_elbo` names what it amounts to for a given
model and guide, and :data:`FUSED` maps that name to its fused computation.
"""

from __future__ import annotations

import torch
from pyro import poutine
from pyro.distributions.kl import kl_divergence
from pyro.poutine.util import site_is_subsample

from ..registry import Registry
from ..rng import forked_rng
from .base import EnumELBO, EstimatorELBO, MeanFieldELBO, TraceELBO, plate_nesting
from .fused import FusedELBO
from .renyi import IWAEBound, RenyiBound
from .score import ScoreFunctionELBO
from .trace_graph import GraphELBO

__all__ = ["ELBOS", "FUSED", "make_elbo", "resolve_elbo"]

ELBOS = Registry("elbo")


@ELBOS.register("trace")
def trace_elbo(num_particles: int = 1, max_plate_nesting: int | None = None) -> EstimatorELBO:
    """Monte Carlo ELBO with reparameterized samples (``Trace_ELBO``)."""
    return TraceELBO(num_particles=num_particles, vectorize_particles=num_particles > 1,
                     max_plate_nesting=plate_nesting(max_plate_nesting))


@ELBOS.register("meanfield")
def meanfield_elbo(num_particles: int = 1, max_plate_nesting: int | None = None) -> EstimatorELBO:
    """ELBO with the KL(q || p) term in closed form where one exists (``TraceMeanField_ELBO``)."""
    return MeanFieldELBO(num_particles=num_particles, vectorize_particles=num_particles > 1,
                         max_plate_nesting=plate_nesting(max_plate_nesting))


@ELBOS.register("fused")
def fused_elbo(num_particles: int = 1, max_plate_nesting: int | None = None) -> EstimatorELBO:
    """``meanfield`` computed without Pyro's per-step tracing (:mod:`pyro_vae.elbos.fused`).

    The same estimator from the same random numbers; a pair it cannot fuse gets
    ``meanfield`` itself.
    """
    return FusedELBO(analytic_kl=True, num_particles=num_particles,
                     max_plate_nesting=max_plate_nesting)


@ELBOS.register("fused_trace")
def fused_trace_elbo(num_particles: int = 1, max_plate_nesting: int | None = None) -> EstimatorELBO:
    """``trace`` (Monte Carlo KL) computed without Pyro's per-step tracing; else ``trace``."""
    return FusedELBO(analytic_kl=False, num_particles=num_particles,
                     max_plate_nesting=max_plate_nesting)


@ELBOS.register("auto")
def auto_elbo(num_particles: int = 1, max_plate_nesting: int | None = None) -> EstimatorELBO:
    """Closed-form KL where registered, Monte Carlo elsewhere, site by site.

    This is what ``TraceMeanField_ELBO`` does; ``fit`` resolves "auto" to the name
    of what it amounts to for a given pair with :func:`resolve_elbo`.
    """
    return meanfield_elbo(num_particles, max_plate_nesting)


@ELBOS.register("graph")
def graph_elbo(num_particles: int = 1, max_plate_nesting: int | None = None) -> EstimatorELBO:
    """``TraceGraph_ELBO``: Rao-Blackwellized score-function terms for non-reparameterized sites."""
    return GraphELBO(num_particles=num_particles, vectorize_particles=num_particles > 1,
                     max_plate_nesting=plate_nesting(max_plate_nesting))


@ELBOS.register("enum")
def enum_elbo(num_particles: int = 1, max_plate_nesting: int | None = None) -> EstimatorELBO:
    """``TraceEnum_ELBO``: discrete sites marked for enumeration are summed out exactly.

    A model without such sites (the VAE) gets ``Trace_ELBO``'s estimate, without the warning.
    """
    return EnumELBO(num_particles=num_particles, vectorize_particles=num_particles > 1,
                    max_plate_nesting=plate_nesting(max_plate_nesting),
                    strict_enumeration_warning=False)


@ELBOS.register("renyi")
def renyi_elbo(num_particles: int = 1, max_plate_nesting: int | None = None,
               alpha: float = 0.5) -> EstimatorELBO:
    """Per-point Renyi bound with ``num_particles`` importance samples (:mod:`.renyi`)."""
    return RenyiBound(alpha=alpha, num_particles=num_particles,
                      max_plate_nesting=max_plate_nesting)


@ELBOS.register("iwae")
def iwae_elbo(num_particles: int = 1, max_plate_nesting: int | None = None) -> EstimatorELBO:
    """Importance-weighted bound, per data point, K = ``num_particles`` (:mod:`.renyi`)."""
    return IWAEBound(num_particles=num_particles, max_plate_nesting=max_plate_nesting)


@ELBOS.register("score")
def score_elbo(num_particles: int = 1, max_plate_nesting: int | None = None) -> EstimatorELBO:
    """``Trace_ELBO`` with the score-function (REINFORCE) estimator at every latent site."""
    return ScoreFunctionELBO(num_particles=num_particles, vectorize_particles=num_particles > 1,
                             max_plate_nesting=plate_nesting(max_plate_nesting))


# the fused computation of each estimator "auto" resolves to
FUSED = {"meanfield": "fused", "trace": "fused_trace"}


def make_elbo(name: str, num_particles: int = 1, max_plate_nesting: int | None = None):
    """The registered ELBO ``name`` with ``num_particles`` (vectorized when > 1).

    Parameters
    ----------
    name : str
        A key of :data:`ELBOS`.
    num_particles : int
        K, particles per step.
    max_plate_nesting : int, optional
        How many ``pyro.plate`` the model and guide nest (the vectorized particles and
        enumerated values go left of them).  None: inferred by running the pair once on
        the first call (on a forked random generator: the run's draws are unchanged).

    Returns
    -------
    pyro.infer.ELBO
        For the registry's own entries an :class:`~pyro_vae.elbos.base.EstimatorELBO`:
        its ``loss``, ``loss_and_grads`` (``pyro.infer.SVI``) and ``differentiable_loss``
        (``fit``) are one estimator.  A plugin's factory receives the same two keywords.
    """
    return ELBOS.get(name)(num_particles=num_particles, max_plate_nesting=max_plate_nesting)


def resolve_elbo(model, guide, *args, **kwargs) -> str:
    """ "meanfield" if ``kl_divergence(q, p)`` is registered at every latent site, else "trace".

    Runs the guide once on ``args`` (e.g. one mini-batch) and the model replayed on
    its samples, and asks torch/Pyro's KL registry about each pair of distributions.
    The random number generators are left as they were: asking does not change a run.
    """
    with torch.no_grad(), forked_rng(*args):
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs
        )
    for name, site in guide_trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or site_is_subsample(site):
            continue
        try:
            kl_divergence(site["fn"], model_trace.nodes[name]["fn"])
        except NotImplementedError:
            return "trace"
    return "meanfield"
