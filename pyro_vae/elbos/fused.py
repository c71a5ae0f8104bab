"""A fused ELBO for the VAE: Pyro's own estimator, computed straight from the distributions.

Every step, ``Trace_ELBO`` runs the guide and the model under poutine handlers: it
records each site in a trace, registers every module parameter in the param store
(``pyro.module``), broadcasts distributions over the plates, scales and masks each
``log_prob``, and calls ``.item()`` on every site (a host synchronisation on a GPU).
For the VAE none of that changes from one step to the next, so :class:`FusedELBO`
traces the pair once with Pyro, checks that it has the one structure it knows how
to fuse,

    guide:  z ~ q = guide.posterior(x)                                  in plate "data"
    model:  z ~ p = model.prior(),  x ~ model.likelihood(model.decoder(z))   in plate "data"

with ``pyro.plate("data", size=n, subsample_size=B)``, and from then on computes,
from the same random numbers as Pyro (``q.rsample`` draws the same noise),

    -ELBO = -(1/K) sum_k sum_b [ s_x log p(x_b|z_kb) + s_z log p(z_kb) - s_q log q(z_kb|x_b) ]

(``trace``, like ``Trace_ELBO``), or with the closed-form KL wherever
``kl_divergence(q, p)`` is registered (``meanfield``, like ``TraceMeanField_ELBO``)

    -ELBO = -(1/K) sum_k s_x sum_b log p(x_b|z_kb) + s_q sum_b KL(q(z|x_b) || p(z)).

K particles are vectorized (z has shape (K, B, latent_dim)).  The scales s are
those Pyro would give the sites: the plate's n / B times whatever scale-only
handlers wrap the model and guide (``fit`` wraps them in one for KL warm-up); they
are read from the live handlers at every step.

Anything else (another model, extra sites, non-reparameterized or enumerated
sites, masks, handlers that do more than scale, a call inside an outer handler)
is declined and computed by the plain Pyro ELBO, so the answer is never a
different estimator.  Like Pyro's JIT ELBOs, the fused steps run without
distribution validation; the planning trace is validated when validation is on.
Tests: ``tests/test_fused.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import pyro
import torch
from pyro.distributions.kl import kl_divergence
from pyro.infer.enum import get_importance_trace
from pyro.poutine.messenger import Messenger, _context_wrap
from pyro.poutine.runtime import _PYRO_STACK
from torch import nn

from ..models.vae import VAE
from ..rng import forked_rng
from .base import EstimatorELBO, MeanFieldELBO, TraceELBO, plate_nesting

__all__ = ["FusedELBO", "FusedPlan", "negative_elbo"]

# the keys of a sample message that a scale-only handler may change
_SCALE_KEYS = frozenset({"scale"})
# relative tolerance of the one-time check that the fused log-densities are Pyro's
_CHECK_RTOL = 1e-4


def _peel(fn: Callable) -> tuple[Callable, list[Messenger]]:
    """The callable inside ``handler(handler(...(fn)))`` and the handlers, outermost first."""
    handlers = []
    while isinstance(fn, partial):
        inner = fn.func if isinstance(fn.func, partial) else fn  # _bound_partial holds a partial
        if inner.func is not _context_wrap:
            break
        handler, fn = inner.args[:2]
        handlers.append(handler)
    return fn, handlers


def _probe(name: str, observed: bool) -> dict[str, Any]:
    """A sample message like the one ``pyro.sample(name, ...)`` sends, scale 1."""
    return {
        "type": "sample", "name": name, "fn": None, "is_observed": observed, "args": (),
        "kwargs": {}, "value": None, "infer": {}, "scale": 1.0, "mask": None,
        "cond_indep_stack": (), "done": False, "stop": False, "continuation": None,
    }


def _handler_scale(handlers: list[Messenger], name: str, observed: bool):
    """The product of the scales ``handlers`` put on the sample site ``name`` (float or tensor)."""
    if not handlers:
        return 1.0
    msg = _probe(name, observed)
    for handler in handlers:
        handler._process_message(msg)
    return msg["scale"]


def _scale_only_reason(handlers: list[Messenger], sites: dict[str, bool]) -> str | None:
    """Why ``handlers`` may do more to the ``sites`` (name -> observed) than scale them, or None."""
    for handler in handlers:
        cls = type(handler)
        for hook in ("__enter__", "__exit__", "_postprocess_message"):
            if getattr(cls, hook) is not getattr(Messenger, hook):
                return f"handler {cls.__name__} overrides {hook}"
        if any(hasattr(handler, f"_pyro_{k}") for k in ("param", "post_sample", "post_param")):
            return f"handler {cls.__name__} handles more than sample sites"
        for name, observed in sites.items():
            msg, reference = _probe(name, observed), _probe(name, observed)
            handler._process_message(msg)
            changed = {
                k for k in msg.keys() | reference.keys()
                if k not in _SCALE_KEYS and not _same(msg.get(k), reference.get(k))
            }
            if changed:
                return f"handler {cls.__name__} changes {sorted(changed)} of site {name!r}"
    return None


def _same(a, b) -> bool:
    """``a == b`` for the plain values of a message (a tensor differs from everything else)."""
    return a is b or (type(a) is type(b) and not torch.is_tensor(a) and a == b)


@dataclass
class FusedPlan:
    """What the one Pyro trace established about a (model, guide) pair: the VAE, the guide
    module, the handlers whose scales the sites get, and the KL's form."""

    vae: VAE
    guide: nn.Module
    model_handlers: list[Messenger]
    guide_handlers: list[Messenger]
    analytic_kl: bool  # use KL(q || p) in closed form (registered and asked for)

    def loss(self, x: torch.Tensor, n: int | None, num_particles: int) -> torch.Tensor:
        """-ELBO for the batch x (B, D) of a data set of size n, averaged over K particles.

        Without distribution validation: the planning trace validated the pair under the
        caller's setting, and the per-step checks (every argument's constraint, x's support:
        a pass over the batch each) cost about 6% of a step.  Pyro's JIT ELBOs skip them too;
        a NaN that validation would have caught is then the training loop's NaN guard's.
        """
        with pyro.validation_enabled(False):
            return negative_elbo(self.vae, self.guide, x, self.scales(x.shape[0], n),
                                 num_particles, self.analytic_kl)

    def scales(self, batch: int, n: int | None) -> tuple[float, float, float]:
        """(s_x, s_z, s_q): the plate's n / B times the live handlers' scales of each site."""
        plate_scale = (n or batch) / batch
        return (plate_scale * _handler_scale(self.model_handlers, "x", True),
                plate_scale * _handler_scale(self.model_handlers, "z", False),
                plate_scale * _handler_scale(self.guide_handlers, "z", False))


def negative_elbo(vae: VAE, guide: nn.Module, x: torch.Tensor, scales, num_particles: int,
                  analytic_kl: bool) -> torch.Tensor:
    """The fused -ELBO of the batch x (B, D): a pure function of its arguments (so
    ``torch.compile`` can trace it whole), ``scales`` = (s_x, s_z, s_q) as floats or a (3,)
    tensor (under ``torch.compile`` a float that changes every step, as during KL warm-up,
    would recompile).  ``analytic_kl`` needs ``kl_divergence(q, p)`` registered (the plan
    checked)."""
    scale_x, scale_z, scale_q = scales
    q = guide.posterior(x)  # batch (B,), event (latent_dim,)
    z = q.rsample((num_particles,)) if num_particles > 1 else q.rsample()  # ([K,] B, L)
    p = vae.prior()
    log_lik = vae.likelihood(vae.decoder(z)).log_prob(x)  # ([K,] B)
    if analytic_kl:
        # the closed form does not depend on z: the mean over particles is the one value
        return scale_q * kl_divergence(q, p).sum() - scale_x * log_lik.sum() / num_particles
    log_p, log_q = p.log_prob(z).sum(), q.log_prob(z).sum()
    elbo = scale_x * log_lik.sum() + scale_z * log_p - scale_q * log_q
    return -elbo / num_particles


class FusedELBO(EstimatorELBO):
    """``Trace_ELBO`` (or ``TraceMeanField_ELBO``) for the VAE without Pyro's per-step tracing.

    A ``pyro.infer.ELBO``: ``differentiable_loss(model, guide, *args, **kwargs)`` (a scalar
    tensor to call ``backward`` on), and ``loss`` and ``loss_and_grads`` derived from it
    (:mod:`.base`), all -ELBO.  The first call for a (model, guide) pair traces it once with
    Pyro (the random number generator is restored afterwards, so the draws are those Pyro's
    ELBO would make); a pair it cannot fuse, or a call it cannot fuse, goes to
    :attr:`fallback`, the registry's plain ELBO of the same estimator (``meanfield`` or
    ``trace``).  Under ``pyro.infer.SVI`` every call is inside SVI's parameter-capturing
    handler, so SVI always gets the fallback: the same estimator, Pyro's speed.

    Parameters
    ----------
    analytic_kl : bool
        Closed-form KL(q || p) where ``kl_divergence`` knows the pair
        (``TraceMeanField_ELBO``); else Monte Carlo (``Trace_ELBO``).
    num_particles : int
        K, vectorized: z is drawn with shape (K, B, latent_dim).
    max_plate_nesting : int, optional
        The fallback's (None: inferred); the fused pair itself has the one plate "data".
    """

    def __init__(self, analytic_kl: bool = True, num_particles: int = 1,
                 max_plate_nesting: int | None = None):
        super().__init__(num_particles=num_particles, vectorize_particles=num_particles > 1,
                         max_plate_nesting=plate_nesting(max_plate_nesting))
        self.analytic_kl = analytic_kl
        elbo = MeanFieldELBO if analytic_kl else TraceELBO
        self.fallback = elbo(num_particles=num_particles, vectorize_particles=num_particles > 1,
                             max_plate_nesting=plate_nesting(max_plate_nesting))
        self._pair: tuple[Callable, Callable] | None = None
        self._plan: FusedPlan | None = None
        self._reason: str | None = None

    def plan(self, model, guide, *args, **kwargs) -> FusedPlan | None:
        """The plan this call would be fused by (its loss, scales and networks), or None when
        it goes to :attr:`fallback` (:meth:`decline_reason` says why)."""
        return None if self.decline_reason(model, guide, *args, **kwargs) else self._plan

    def decline_reason(self, model, guide, *args, **kwargs) -> str | None:
        """None when this call would be fused, else why it goes to :attr:`fallback`."""
        if _PYRO_STACK:
            return "called inside a Pyro handler"
        if len(args) != 1 or not torch.is_tensor(args[0]) or set(kwargs) - {"n"}:
            return "arguments are not (x, n=N)"
        if self._pair != (model, guide):
            self._pair = (model, guide)
            self._plan, self._reason = self._make_plan(model, guide, args[0], kwargs.get("n"))
        return self._reason

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """-ELBO as a differentiable scalar tensor (same value and gradient as :attr:`fallback`)."""
        if self.decline_reason(model, guide, *args, **kwargs) is not None:
            return self.fallback.differentiable_loss(model, guide, *args, **kwargs)
        return self._plan.loss(args[0], kwargs.get("n"), self.num_particles)

    def _get_trace(self, model, guide, args, kwargs):
        # the traces of this estimator are its fallback's (Pyro's ELBO asks for the method)
        return self.fallback._get_trace(model, guide, args, kwargs)

    def _make_plan(self, model, guide, x: torch.Tensor, n: int | None):
        """(plan, None) for a pair it fuses, else (None, why not)."""
        vae, model_handlers = _peel(model)
        guide_module, guide_handlers = _peel(guide)
        if not isinstance(vae, VAE) or type(vae).forward is not VAE.forward:
            return None, "the model is not pyro_vae's VAE"
        if not callable(getattr(guide_module, "posterior", None)):
            return None, "the guide has no posterior(x)"
        reason = _scale_only_reason(model_handlers, {"z": False, "x": True}) or _scale_only_reason(
            guide_handlers, {"z": False}
        )
        if reason:
            return None, reason
        plan = FusedPlan(vae, guide_module, model_handlers, guide_handlers, self.analytic_kl)
        with torch.no_grad(), forked_rng(x):
            model_trace, guide_trace = get_importance_trace("flat", 1, model, guide, (x,), {"n": n})
            reason = self._check(plan, model_trace, guide_trace, x, n)
        return (None, reason) if reason else (plan, None)

    def _check(self, plan: FusedPlan, model_trace, guide_trace, x, n) -> str | None:
        """Why the traced pair is not the fused computation, or None; may clear ``analytic_kl``."""
        model_sites = {k: s for k, s in model_trace.nodes.items() if s["type"] == "sample"}
        guide_sites = {k: s for k, s in guide_trace.nodes.items() if s["type"] == "sample"}
        if list(model_sites) != ["z", "x"] or list(guide_sites) != ["z"]:
            return f"sample sites {list(guide_sites)} (guide), {list(model_sites)} (model)"
        x_site, z_site, q_site = model_sites["x"], model_sites["z"], guide_sites["z"]
        if not x_site["is_observed"] or x_site["value"] is not x or z_site["is_observed"]:
            return "x is not the observed site or z is observed"
        for site in (x_site, z_site, q_site):
            if [f.name for f in site["cond_indep_stack"]] != ["data"] or site["mask"] is not None:
                return f"site {site['name']!r} is not in the plate 'data' alone, unmasked"
            if site["infer"].get("enumerate"):
                return f"site {site['name']!r} is enumerated"
        if not q_site["fn"].has_rsample:
            return "the guide's z is not reparameterizable"
        # the fused distributions must give Pyro's scaled log-densities at Pyro's sample
        z = q_site["value"]
        batch = x.shape[0]
        plate_scale = (n or batch) / batch
        q, p = plan.guide.posterior(x), plan.vae.prior()
        likelihood = plan.vae.likelihood(plan.vae.decoder(z))
        fused = {
            "q": (q_site, _handler_scale(plan.guide_handlers, "z", False) * q.log_prob(z)),
            "z": (z_site, _handler_scale(plan.model_handlers, "z", False) * p.log_prob(z)),
            "x": (x_site, _handler_scale(plan.model_handlers, "x", True) * likelihood.log_prob(x)),
        }
        for key, (site, log_prob) in fused.items():
            log_prob, traced = plate_scale * log_prob, site["log_prob"]
            if log_prob.shape != (batch,) or not torch.allclose(
                log_prob, traced, rtol=_CHECK_RTOL, atol=_CHECK_RTOL * float(traced.abs().max())
            ):
                return f"log-density of site {key!r} differs from the traced one"
        if plan.analytic_kl:
            try:
                kl = kl_divergence(q, p)
            except NotImplementedError:  # TraceMeanField_ELBO falls back to Monte Carlo too
                plan.analytic_kl = False
            else:
                if kl.shape != (batch,):
                    return f"KL(q || p) has shape {tuple(kl.shape)}, not ({batch},)"
        return None
