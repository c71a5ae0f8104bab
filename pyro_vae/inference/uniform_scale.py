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

Both NUTS routes run ``options.chains`` chains one after another (this machine has two
cores, and one chain of this small model keeps one busy), so that R-hat compares chains.
The point-estimate routes (``mle``, ``svi``) have no draws of theta; :func:`theta_draws_at`
gives the Gaussian approximation of the posterior that their ArviZ export uses.

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
from ..errors import UserError
from ..guides.uniform_scale import AmortizedUniformScaleGuide
from ..models.uniform_scale import (
    UniformScale,
    UniformScaleMarginal,
    latent_model,
    marginal_model,
)
from ..progress import live_bars
from ..registry import Registry
from ..train import FitResult, TrainingLog, fit
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
    "theta_draws_at",
    "toy_inference",
    "toy_inference_names",
]

TOY_INFERENCES = Registry("toy inference")


@dataclass
class ToyOptions:
    """Budgets of the iterative routes (``mle`` needs none).

    ``steps``, ``lr``, ``num_particles`` and ``elbo`` are the ``svi`` route's; ``warmup``,
    ``samples`` (both per chain) and ``chains`` those of ``nuts`` and ``nuts-latent``.
    ``chains`` defaults to 1 here, as before it existed, so that callers that run their own
    chains (the toy workflow notebook) or budget their time (``compare``) are unchanged;
    ``pyro-vae toy --chains`` defaults to 2.  ``log`` is the ``svi`` route's TensorBoard log
    (:class:`~pyro_vae.train.TrainingLog`), written by :func:`~pyro_vae.train.fit` at every
    step (a full-batch step is an epoch, whose loss it reads anyway); the caller closes it.
    """

    steps: int = 1500  # SVI steps, each on the full data
    lr: float = 0.02
    num_particles: int = 4
    warmup: int = 200  # NUTS, per chain
    samples: int = 200
    chains: int = 1
    elbo: str = "trace"  # SVI's ELBO, a name in pyro_vae.elbos.ELBOS
    log: TrainingLog | None = None


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
        Posterior draws of ``a``, ``b``, ``mu`` (NUTS routes), ``options.chains`` chains.
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
        log=options.log,
    )
    return ToyFit(model, guide, time.perf_counter() - start,
                  {"final_train_elbo": result.train_elbo[-1], "steps": options.steps},
                  training=result)


def _run_nuts(model_fn, x: torch.Tensor, seed: int, options: ToyOptions | None) -> ToyFit:
    """``options.chains`` NUTS chains over ``model_fn(x)``, one after another, each started at
    the moment estimate; theta = the posterior mean over all chains.

    The chains draw from one random stream seeded once, so chain 0 is the one-chain run of
    the same seed.  ESS and R-hat are over chains (split R-hat within the one chain of
    ``chains=1``); ``divergences`` is the total over chains.
    """
    options = options or ToyOptions()
    check_draws(options.samples)
    if options.chains < 1:
        raise UserError(f"--chains must be >= 1, got {options.chains}")
    start = time.perf_counter()
    pyro.set_rng_seed(seed)
    a0, b0, mu0 = moment_estimate(x)
    init = init_to_value(values={"a": x.new_tensor(a0), "gap": x.new_tensor(b0 - a0),
                                 "mu": x.new_tensor(mu0)})
    chains, divergences = [], 0
    for _ in range(options.chains):
        # one MCMC per chain: Pyro's own num_chains > 1 runs them in parallel processes
        # (or warns, and runs them in turn, where there are too few cores)
        mcmc = MCMC(NUTS(model_fn, init_strategy=init), num_samples=options.samples,
                    warmup_steps=options.warmup, num_chains=1,
                    disable_progbar=not live_bars())
        mcmc.run(x)
        samples = mcmc.get_samples()
        chains.append({"a": samples["a"], "b": samples["a"] + samples["gap"],
                       "mu": samples["mu"]})
        divergences += len(mcmc.diagnostics()["divergences"]["chain 0"])
    seconds = time.perf_counter() - start
    draws = {k: torch.stack([chain[k] for chain in chains]) for k in ("a", "b", "mu")}
    mean = {k: v.mean().item() for k, v in draws.items()}
    extra: dict[str, Any] = {"warmup": options.warmup, "samples": options.samples,
                             "chains": options.chains, "divergences": divergences}
    for k, v in draws.items():
        ess, r_hat = ess_and_rhat(v)  # (chain, sample)
        extra[f"{k}_sd"] = v.std().item()
        extra[f"{k}_ess"] = ess.item()
        extra[f"{k}_r_hat"] = r_hat.item()
    return ToyFit(UniformScale(mean["a"], mean["b"], mean["mu"]), None, seconds, extra, draws)


@TOY_INFERENCES.register("nuts")
def fit_nuts(x: torch.Tensor, seed: int = 0, options: ToyOptions | None = None) -> ToyFit:
    """NUTS over theta with z integrated out exactly; theta = posterior mean."""
    return _run_nuts(marginal_model, x, seed, options)


@TOY_INFERENCES.register("nuts-latent")
def fit_nuts_latent(x: torch.Tensor, seed: int = 0, options: ToyOptions | None = None) -> ToyFit:
    """NUTS over theta and the N latent scales; theta = posterior mean."""
    return _run_nuts(latent_model, x, seed, options)


def theta_draws_at(x: torch.Tensor, model: UniformScale, num_draws: int
                   ) -> dict[str, torch.Tensor]:
    """Draws of theta that stand for a point estimate theta_hat (``mle``, ``svi``): (S,) each.

    The fit has no posterior over theta, but a point mass is no use to ArviZ: every draw
    would give the same log p(x_i | theta), and PSIS-LOO cannot fit a Pareto tail to
    constant importance ratios.  The draws are instead the large-sample (Bernstein-von
    Mises) Gaussian approximation of the posterior, centred at the estimate, in the
    unconstrained coordinates u = (log a, log(b - a), mu) in which NUTS moves (so every
    draw keeps 0 < a < b):

        u_s ~ N(u_hat, J^-1),   J = sum_i g_i g_i^T,   g_i = d log p(x_i | u) / du at u_hat,

    J the empirical Fisher information (outer product of the per-point scores of the exact
    E1 likelihood).  Unlike the Hessian, J is positive definite at any u_hat, also where an
    SVI fit stopped short of the maximum; at the maximum both estimate the same
    information.  To first order in u_s - u_hat, Var_s log p(x_i | u_s) = g_i^T J^-1 g_i,
    whose sum over i is tr(J^-1 J) = 3: the LOO estimate of such an export pays about 3
    nats (p_loo ~ 3, AIC's price for the three parameters), as the NUTS export does.

    Parameters
    ----------
    x : (N,) tensor
        The data the estimate was fitted to.
    model : UniformScale
        The model at theta_hat.
    num_draws : int
        S; drawn from Torch's global random stream (seed it for repeatable draws).

    Returns
    -------
    dict with ``a``, ``b``, ``mu``, each of shape (S,).

    Raises :class:`UserError` where the approximation's draws leave 0 < a < b < inf (an
    estimate where the likelihood is nearly flat, such as b - a ~ 0).
    """
    a, b = (t.detach() for t in model.bounds())
    u_hat = torch.stack([a.log(), (b - a).log(), model.mu.detach()])
    # one copy of u per point: the gradient of the summed log-likelihood w.r.t. row i is g_i
    u = u_hat.expand(x.shape[0], 3).clone().requires_grad_()
    a_i = u[:, 0].exp()
    UniformScaleMarginal(a_i, a_i + u[:, 1].exp(), u[:, 2]).log_prob(x).sum().backward()
    scores = u.grad  # (N, 3)
    posterior = torch.distributions.MultivariateNormal(u_hat, precision_matrix=scores.T @ scores)
    draws = posterior.sample((num_draws,))  # (S, 3)
    a_s = draws[:, 0].exp()
    b_s = a_s + draws[:, 1].exp()
    if not bool(((a_s > 0) & (b_s > a_s) & b_s.isfinite()).all()):
        # the likelihood is nearly flat in some direction of u (e.g. an MLE with b - a ~ 0:
        # the data do not pin the interval down), so the Gaussian's draws leave the support
        raise UserError(f"the estimate a = {a.item():.6g}, b = {b.item():.6g} sits where the "
                        "likelihood barely constrains theta; its Gaussian approximation has no "
                        "valid draws to export: export --inference nuts instead")
    return {"a": a_s, "b": b_s, "mu": draws[:, 2]}


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
