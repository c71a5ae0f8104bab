"""The uniform-scale toy model end to end, and the ``pyro-vae toy`` command.

    z ~ Uniform(a, b),  x | z ~ Normal(mu, z)

Four routes to theta = (a, b, mu), chosen by name from :data:`TOY_INFERENCES`:

``mle``          exact maximum likelihood: L-BFGS on the E1 closed form of log p(x);
                 standard errors from the observed information (the Hessian).
``svi``          SVI on the ELBO with the amortized guide whose support is (a, b),
                 through :func:`pyro_vae.train.fit` (full batch).
``nuts``         NUTS over theta with weak priors, z integrated out exactly.
``nuts-latent``  NUTS over theta and all N latent z (as z = a + (b - a) w, w ~ U(0, 1),
                 because HMC needs a support that does not move with theta).

Whatever the route, the reported ``log_likelihood`` is the exact mean log p(x) per
point at the fitted theta, so the routes are compared on one honest number.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
from pyro.infer import MCMC, NUTS
from pyro.infer.autoguide import init_to_value
from torch import nn

from ..elbos import log_importance_weights
from ..errors import UserError
from ..guides.uniform_scale import (
    AmortizedUniformScaleGuide,
    kl_to_posterior,
)
from ..models.uniform_scale import (
    UniformScale,
    UniformScaleMarginal,
    check_theta,
    latent_model,
    marginal_model,
)
from ..registry import Registry
from ..train import FitResult, fit
from .diagnostics import ess_and_rhat

__all__ = [
    "TOY_INFERENCES",
    "ToyOptions",
    "ToyFit",
    "ElboIdentity",
    "parse_simulate",
    "load_toy_data",
    "simulate",
    "moment_estimate",
    "fit_mle",
    "fit_svi",
    "fit_nuts",
    "fit_nuts_latent",
    "elbo_identity",
]

TOY_INFERENCES = Registry("toy inference")


@dataclass
class ToyOptions:
    """Budgets of the iterative routes (``mle`` needs none)."""

    steps: int = 1500  # SVI steps, each on the full data
    lr: float = 0.02
    num_particles: int = 4
    warmup: int = 200  # NUTS
    samples: int = 200
    elbo: str = "trace"  # SVI's ELBO, a name in pyro_vae.elbos.ELBOS


@dataclass
class ToyFit:
    """A fitted model, its guide where the route has one, wall time and route-specific numbers."""

    model: UniformScale
    guide: nn.Module | None
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)
    draws: dict[str, torch.Tensor] | None = None  # posterior draws of a, b, mu: (chain, draw)
    training: FitResult | None = None  # the SVI route's record of its steps


def parse_simulate(spec: str) -> tuple[float, float, float, int]:
    """``"a,b,mu,N"`` -> (a, b, mu, N) with 0 < a < b and N >= 2; :class:`UserError` otherwise."""
    parts = [p.strip() for p in spec.split(",")]
    if len(parts) != 4:
        raise UserError(f"--simulate wants a,b,mu,N (four numbers), got {spec!r}")
    try:
        a, b, mu, n_float = (float(p) for p in parts)
    except ValueError:
        raise UserError(f"--simulate wants four numbers a,b,mu,N, got {spec!r}") from None
    check_theta(a, b, mu)
    if not (math.isfinite(n_float) and n_float == int(n_float) and n_float >= 2):
        raise UserError(f"--simulate: N must be a whole number >= 2, got {parts[3]}")
    return a, b, mu, int(n_float)


def load_toy_data(path: str | Path) -> torch.Tensor:
    """A .npy file of N >= 2 finite numbers, shape (N,) or (N, 1) -> float64 tensor (N,)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--data {path}: no such file")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise UserError(f"--data {path} is not a readable .npy array ({exc})") from None
    if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.number):
        raise UserError(f"--data {path} must hold numbers, got {getattr(array, 'dtype', '?')}")
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise UserError(f"--data {path}: expected shape (N,) or (N, 1), got {array.shape}")
    if array.shape[0] < 2:
        raise UserError(f"--data {path}: need at least 2 points, got {array.shape[0]}")
    if not np.isfinite(array).all():
        raise UserError(f"--data {path} contains NaN or infinite values")
    if np.ptp(array) == 0:
        raise UserError(f"--data {path}: all points are equal; a scale cannot be fitted")
    return torch.as_tensor(array, dtype=torch.float64)


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
    """Asymptotic standard errors of (a, b, mu): sqrt diag of the inverse observed information."""

    def total_log_lik(t):
        return UniformScaleMarginal(t[0], t[1], t[2]).log_prob(x).sum()

    hessian = torch.autograd.functional.hessian(total_log_lik, theta)
    return torch.linalg.inv(-hessian).diagonal().sqrt()


@TOY_INFERENCES.register("mle")
def fit_mle(x: torch.Tensor, seed: int = 0, options: ToyOptions | None = None) -> ToyFit:
    """Exact maximum likelihood: L-BFGS on mean log p(x) in the unconstrained parameters."""
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


def _run_nuts(model_fn, x: torch.Tensor, seed: int, options: ToyOptions) -> ToyFit:
    options = options or ToyOptions()
    start = time.perf_counter()
    pyro.set_rng_seed(seed)
    a0, b0, mu0 = moment_estimate(x)
    init = init_to_value(values={"a": x.new_tensor(a0), "gap": x.new_tensor(b0 - a0),
                                 "mu": x.new_tensor(mu0)})
    mcmc = MCMC(NUTS(model_fn, init_strategy=init), num_samples=options.samples,
                warmup_steps=options.warmup, num_chains=1, disable_progbar=True)
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


@dataclass
class ElboIdentity:
    """Per point (B,): exact log p(x), Monte Carlo ELBO and its standard error, quadrature KL."""

    x: torch.Tensor
    log_px: torch.Tensor
    elbo: torch.Tensor
    elbo_se: torch.Tensor
    kl: torch.Tensor

    @property
    def z_scores(self) -> torch.Tensor:
        """(log p(x) - ELBO - KL) / se(ELBO): standard normal if the identity holds."""
        return (self.log_px - self.elbo - self.kl) / self.elbo_se


@torch.no_grad()
def elbo_identity(model, guide, x: torch.Tensor, num_particles: int = 4000) -> ElboIdentity:
    """Check log p(x) = ELBO + KL(q(z|x) || p(z|x)) per point, three independent ways.

    log p(x) from the E1 closed form; the ELBO by Monte Carlo over Pyro's traces of model
    and guide (:func:`pyro_vae.elbos.log_importance_weights`); KL by Gauss-Hermite
    quadrature.
    """
    w = log_importance_weights(model, guide, x, num_particles)  # (K, B)
    return ElboIdentity(
        x, model.log_marginal(x), w.mean(0), w.std(0) / math.sqrt(num_particles),
        kl_to_posterior(model, guide, x),
    )
