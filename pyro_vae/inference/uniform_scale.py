"""Routes to theta = (a, b, mu) of the uniform-scale toy model.

    z ~ Uniform(a, b),  x | z ~ Normal(mu, z),  0 < a < b

Four routes, chosen by name from :data:`TOY_INFERENCES`:

``mle``          exact maximum likelihood: L-BFGS on the E1 closed form of log p(x);
                 standard errors from the observed information (the Hessian).
``svi``          SVI on the ELBO with the amortized guide whose support is (a, b),
                 through :func:`pyro_vae.train.fit` (full batch).
``nuts``         NUTS over theta with weak priors, z integrated out exactly.
``nuts-latent``  NUTS over theta and all N latent z (as z = a + (b - a) w, w ~ U(0, 1),
                 because HMC needs a support that does not move with theta).

An ELBO's name (a key of :data:`pyro_vae.elbos.ELBOS`) also names a route: ``svi`` with that
ELBO (:func:`toy_inference`); ``pyro-vae toy`` and ``pyro-vae compare`` accept both kinds.

Each route is ``fit(x, seed=0, options=None) -> ToyFit`` for data x of shape (N,),
float64; :mod:`pyro_vae.experiments.uniform_scale` reports the exact mean log p(x) per point at the
fitted theta whatever the route, so the routes are compared on one honest number.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pyro
import torch
from pyro.infer import MCMC, NUTS
from pyro.infer.autoguide import init_to_value
from torch import nn

from ..elbos import ELBOS
from ..guides.uniform_scale import AmortizedUniformScaleGuide
from ..models.uniform_scale import (
    UniformScale,
    UniformScaleMarginal,
    latent_model,
    marginal_model,
)
from ..progress import live_bars
from ..registry import Registry
from ..train import FitResult, fit
from .diagnostics import check_draws, ess_and_rhat

__all__ = [
    "TOY_INFERENCES",
    "ToyOptions",
    "ToyFit",
    "simulate",
    "moment_estimate",
    "fit_mle",
    "fit_svi",
    "fit_nuts",
    "fit_nuts_latent",
    "toy_inference",
    "toy_inference_names",
]

TOY_INFERENCES = Registry("toy inference")


@dataclass
class ToyOptions:
    """Budgets of the iterative routes (``mle`` needs none).

    ``steps``, ``lr``, ``num_particles`` and ``elbo`` are the ``svi`` route's; ``warmup``
    and ``samples`` those of ``nuts`` and ``nuts-latent`` (one chain).
    """

    steps: int = 1500  # SVI steps, each on the full data
    lr: float = 0.02
    num_particles: int = 4
    warmup: int = 200  # NUTS
    samples: int = 200
    elbo: str = "trace"  # SVI's ELBO, a name in pyro_vae.elbos.ELBOS


@dataclass
class ToyFit:
    """What a route returns.

    Attributes
    ----------
    model : UniformScale
        The model at the fitted theta (the posterior mean for the NUTS routes).
    guide : nn.Module or None
        q(z | x) where the route trains one (``svi``: :class:`AmortizedUniformScaleGuide`).
    seconds : float
        Wall time of the fit alone.
    extra : dict
        Route-specific numbers: standard errors (``mle``), the last training ELBO (``svi``),
        posterior sd, ESS, R-hat and divergences (NUTS).
    draws : dict of (chain, draw) tensors, or None
        Posterior draws of ``a``, ``b``, ``mu`` (NUTS routes).
    training : FitResult or None
        The ``svi`` route's record of its steps.
    """

    model: UniformScale
    guide: nn.Module | None
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)
    draws: dict[str, torch.Tensor] | None = None
    training: FitResult | None = None


def simulate(a: float, b: float, mu: float, num_points: int, seed: int = 0) -> torch.Tensor:
    """N draws from the toy model at theta = (a, b, mu), float64 (N,)."""
    pyro.set_rng_seed(seed)
    return UniformScale(a, b, mu).sample(num_points)


def moment_estimate(x: torch.Tensor) -> tuple[float, float, float]:
    """Method-of-moments (a, b, mu): the starting point of every route.

    E|x - mu| = sqrt(2/pi) E[z], E(x - mu)^2 = E[z^2] and Var z = (b - a)^2 / 12.
    """
    mu = x.median()
    mean_z = math.sqrt(math.pi / 2) * (x - mu).abs().mean().item()
    var_z = max(((x - mu) ** 2).mean().item() - mean_z**2, 0.0)
    # keep 0 < a < b even when the moments say otherwise (small or odd samples)
    gap = max(math.sqrt(12 * var_z), 0.1 * mean_z)
    a = max(mean_z - gap / 2, 0.1 * mean_z)
    return a, a + gap, mu.item()


def _observed_information_se(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Asymptotic standard errors of (a, b, mu), shape (3,), at ``theta`` = (a, b, mu) (3,).

    sqrt diag of the inverse observed information, the Hessian of the exact total
    log-likelihood taken in (a, b, mu) themselves (not the optimizer's unconstrained ones).
    """

    def total_log_lik(t):
        return UniformScaleMarginal(t[0], t[1], t[2]).log_prob(x).sum()

    hessian = torch.autograd.functional.hessian(total_log_lik, theta)
    return torch.linalg.inv(-hessian).diagonal().sqrt()


@TOY_INFERENCES.register("mle")
def fit_mle(x: torch.Tensor, seed: int = 0, options: ToyOptions | None = None) -> ToyFit:
    """Exact maximum likelihood: L-BFGS on mean log p(x) in the unconstrained parameters.

    Deterministic: ``seed`` and ``options`` are accepted for the common signature only.
    ``extra`` holds ``a_se``, ``b_se``, ``mu_se``, the square roots of the diagonal of the
    inverse observed information -d^2 sum_i log p(x_i) / d theta^2 at the maximum.
    """
    start = time.perf_counter()
    model = UniformScale(*moment_estimate(x))
    optimizer = torch.optim.LBFGS(
        model.parameters(), lr=1.0, max_iter=500, tolerance_grad=1e-10,
        tolerance_change=1e-14, line_search_fn="strong_wolfe",
    )

    def closure():
        optimizer.zero_grad()
        loss = -model.log_marginal(x).mean()
        loss.backward()
        return loss

    optimizer.step(closure)
    seconds = time.perf_counter() - start
    theta = model.theta()
    se = _observed_information_se(x, torch.tensor(list(theta.values()), dtype=torch.float64))
    extra = {f"{k}_se": s.item() for k, s in zip(theta, se, strict=True)}
    return ToyFit(model, None, seconds, extra)


@TOY_INFERENCES.register("svi")
def fit_svi(x: torch.Tensor, seed: int = 0, options: ToyOptions | None = None) -> ToyFit:
    """SVI on the ELBO with :class:`AmortizedUniformScaleGuide`, full batch."""
    options = options or ToyOptions()
    start = time.perf_counter()
    pyro.set_rng_seed(seed)  # the guide network's initial weights
    model = UniformScale(*moment_estimate(x))
    guide = AmortizedUniformScaleGuide(model)
    result = fit(
        model, guide, x, epochs=options.steps, batch_size=x.shape[0], lr=options.lr,
        elbo=options.elbo, num_particles=options.num_particles, seed=seed, progress=False,
    )
    return ToyFit(model, guide, time.perf_counter() - start,
                  {"final_train_elbo": result.train_elbo[-1], "steps": options.steps},
                  training=result)


def _run_nuts(model_fn, x: torch.Tensor, seed: int, options: ToyOptions | None) -> ToyFit:
    """One NUTS chain over ``model_fn(x)`` from the moment estimate; theta = posterior mean."""
    options = options or ToyOptions()
    check_draws(options.samples)
    start = time.perf_counter()
    pyro.set_rng_seed(seed)
    a0, b0, mu0 = moment_estimate(x)
    init = init_to_value(values={"a": x.new_tensor(a0), "gap": x.new_tensor(b0 - a0),
                                 "mu": x.new_tensor(mu0)})
    mcmc = MCMC(NUTS(model_fn, init_strategy=init), num_samples=options.samples,
                warmup_steps=options.warmup, num_chains=1,
                disable_progbar=not live_bars())
    mcmc.run(x)
    seconds = time.perf_counter() - start
    samples = mcmc.get_samples()
    draws = {"a": samples["a"], "b": samples["a"] + samples["gap"], "mu": samples["mu"]}
    mean = {k: v.mean().item() for k, v in draws.items()}
    extra: dict[str, Any] = {
        "warmup": options.warmup, "samples": options.samples,
        "divergences": len(mcmc.diagnostics()["divergences"]["chain 0"]),
    }
    for k, v in draws.items():
        ess, r_hat = ess_and_rhat(v[None])  # one chain: (chain, sample)
        extra[f"{k}_sd"] = v.std().item()
        extra[f"{k}_ess"] = ess.item()
        extra[f"{k}_r_hat"] = r_hat.item()
    return ToyFit(UniformScale(mean["a"], mean["b"], mean["mu"]), None, seconds, extra,
                  {k: v[None] for k, v in draws.items()})


@TOY_INFERENCES.register("nuts")
def fit_nuts(x: torch.Tensor, seed: int = 0, options: ToyOptions | None = None) -> ToyFit:
    """NUTS over theta with z integrated out exactly; theta = posterior mean."""
    return _run_nuts(marginal_model, x, seed, options)


@TOY_INFERENCES.register("nuts-latent")
def fit_nuts_latent(x: torch.Tensor, seed: int = 0, options: ToyOptions | None = None) -> ToyFit:
    """NUTS over theta and the N latent scales; theta = posterior mean."""
    return _run_nuts(latent_model, x, seed, options)


def toy_inference_names() -> list[str]:
    """Every name ``--inference`` accepts for the toy model: the routes and the ELBOs."""
    return sorted({*TOY_INFERENCES.names(), *ELBOS.names()})


def toy_inference(name: str, options: ToyOptions | None = None
                  ) -> tuple[Callable[..., ToyFit], ToyOptions]:
    """The route ``name`` asks for and its options: a route of :data:`TOY_INFERENCES` as it is,
    or an ELBO's name: the ``svi`` route with ``options.elbo = name``."""
    options = options or ToyOptions()
    if name in TOY_INFERENCES:
        return TOY_INFERENCES.get(name), options
    if name in ELBOS:
        return fit_svi, replace(options, elbo=name)
    raise ValueError(f"unknown toy inference {name!r}; choose one of: "
                     f"{', '.join(toy_inference_names())}")
