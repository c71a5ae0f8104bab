"""Fitting the Gaussian mixture of :mod:`pyro_vae.models.gmm`: three routes, one result type.

Routes (registry :data:`GMM_ROUTES`), each ``route(x, model, *, seed, **options)`` returning
(point estimate, relabelled draws or None, info):

``map``
    The posterior mode by EM on the Pyro model's own terms, from k-means starts
    (:func:`pyro_vae.inference.gmm_em.em`; the E- and M-steps are documented there).  It
    maximises log p(x, theta) = sum_i logsumexp_j [log alpha_j + log N(x_i; mu_j, Sigma_j)]
    + log p(theta), which is exactly ``-TraceEnum_ELBO`` with point-mass (AutoDelta) guides
    on the globals.
``vi``
    ``AutoNormal`` (or ``AutoMultivariateNormal``) on the globals with the assignments summed
    out by ``TraceEnum_ELBO``, started at the MAP fit.
``nuts``
    NUTS on the globals with the assignments summed out, started at the MAP fit.  Its
    potential (:func:`unconstrained_potential`) is the same log joint (the enumerated sum, in
    closed form), mapped to R^n by the priors' ``biject_to`` transforms: the same draws as
    NUTS on the traced model (tested), without building a Pyro trace per gradient.  Every
    draw is relabelled (:meth:`MixtureParams.ordered`) before any summary or r-hat.

Generic SVI on this model is far slower than EM and stops short of its optimum; EM on the
model's own terms matches scikit-learn's EM (``benchmarks/gmm_vs_sklearn.py``; the
measurements behind these choices are in ``benchmarks/NOTES.md``).  The Bayesian routes are
for uncertainty, not for speed.

Model choice: :func:`select_components` scores K by held-out log-likelihood, BIC and AIC
(:func:`num_parameters` free parameters), one :func:`selection_row` per K.  A fit users can
keep, save and score on new data: :class:`~pyro_vae.inference.gaussian_mixture.GaussianMixture`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.distributions.transforms import biject_to
from pyro.infer import MCMC, NUTS, SVI, Predictive, TraceEnum_ELBO
from pyro.infer.autoguide import AutoMultivariateNormal, AutoNormal, init_to_value

from ..errors import UserError
from ..models.gmm import GLOBAL_SITES, GaussianMixtureModel, GMMPriors, MixtureParams
from ..models.gmm_density import DTYPE, log_marginal
from ..progress import live_bars
from ..registry import Registry
from ..train import CHECK_EVERY, TrainingLog
from ..train.guards import Check
from .diagnostics import check_draws, ess_and_rhat
from .gmm_em import em

__all__ = [
    "GMM_ROUTES",
    "GMMFit",
    "aic",
    "bic",
    "build_model",
    "check_data",
    "fit_gmm",
    "fit_map",
    "fit_nuts",
    "fit_vi",
    "num_parameters",
    "select_components",
    "selection_row",
    "unconstrained_potential",
]

GMM_ROUTES = Registry("gmm inference")


# ---------------------------------------------------------------------------- data and model


def check_data(x, what: str = "data") -> torch.Tensor:
    """``x`` as an (N, D) float64 tensor; ``UserError`` for wrong shape, NaN or infinity."""
    x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x)
    if x.ndim == 1:
        x = x.unsqueeze(-1)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise UserError(f"{what} must be a non-empty N x D array, got shape {tuple(x.shape)}")
    if not (x.is_floating_point() or x.dtype in (torch.int32, torch.int64, torch.uint8)):
        raise UserError(f"{what} must be numeric, got dtype {x.dtype}")
    x = x.to(DTYPE)
    if not torch.isfinite(x).all():
        raise UserError(f"{what} contains NaN or infinite values; remove or impute them first")
    if not torch.isfinite(x.square().sum()):  # covariances, distances: squares of the data
        raise UserError(f"{what} has values too large to square in float64 (largest "
                        f"|x| = {x.abs().max().item():.3g}); rescale it (e.g. standardize)")
    return x


def build_model(x: torch.Tensor, num_components: int, covariance: str) -> GaussianMixtureModel:
    """The mixture model for data x (N, D) with weak data-informed priors (float64)."""
    n = x.shape[0]
    if not 1 <= num_components <= n:
        raise UserError(
            f"the number of components must be between 1 and N={n}, got {num_components}"
        )
    if covariance not in ("diag", "full"):
        raise UserError(f"--covariance must be diag or full, got {covariance!r}")
    return GaussianMixtureModel(num_components, x.shape[1], covariance, GMMPriors.from_data(x))


# ---------------------------------------------------------------------------- results


@dataclass
class GMMFit:
    """A fitted mixture.

    Attributes
    ----------
    model : GaussianMixtureModel
    params : MixtureParams
        Point estimate, components ordered by the first coordinate of their means
        (MAP for ``map``; posterior means of the relabelled draws for ``vi`` / ``nuts``).
    inference : str
        The route's name in :data:`GMM_ROUTES`.
    seconds : float
        Wall time of the route (EM starts included).
    samples : MixtureParams or None
        Relabelled posterior draws, every field with a leading (S,) dim (``vi``, ``nuts``).
    info : dict
        The route's own numbers: EM's restarts, the final ELBO, NUTS's r-hat and ESS.
    """

    model: GaussianMixtureModel
    params: MixtureParams
    inference: str
    seconds: float
    samples: MixtureParams | None = None
    info: dict = field(default_factory=dict)

    def log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """Per-point log-likelihood (N,).

        Plug-in log p(x | theta_hat) for ``map``; for the Bayesian routes the posterior
        predictive log (1/S) sum_s p(x | theta_s), the quantity held-out scores should use.
        """
        if self.samples is None:
            return log_marginal(x, self.params)
        draws = range(len(self.samples.weights))
        per_draw = torch.stack([log_marginal(x, self.samples.draw(s)) for s in draws])
        return torch.logsumexp(per_draw, 0) - math.log(per_draw.shape[0])


def _posterior_mean(samples: MixtureParams) -> MixtureParams:
    """Mean of relabelled draws; correlations are averaged as covariances, then re-split."""
    weights = samples.weights.mean(0)
    weights = weights / weights.sum()
    covs = samples.covariances().mean(0)
    return MixtureParams.from_covariances(
        weights, samples.locs.mean(0), covs, full=samples.chol_corr is not None
    )


def num_parameters(k: int, d: int, covariance: str) -> int:
    """Free parameters: K - 1 weights, K D means, K D or K D (D + 1) / 2 covariance entries."""
    cov = k * d if covariance == "diag" else k * d * (d + 1) // 2
    return (k - 1) + k * d + cov


def bic(total_log_likelihood: float, n: int, k: int, d: int, covariance: str) -> float:
    """-2 log L + p log N (lower is better; same convention as scikit-learn)."""
    return -2 * total_log_likelihood + num_parameters(k, d, covariance) * math.log(n)


def aic(total_log_likelihood: float, k: int, d: int, covariance: str) -> float:
    """-2 log L + 2 p (lower is better)."""
    return -2 * total_log_likelihood + 2 * num_parameters(k, d, covariance)


# ---------------------------------------------------------------------------- routes


def _globals_only(model: GaussianMixtureModel):
    """The model with the assignment and data hidden, for autoguides (they see globals only)."""
    return poutine.block(model, expose=list(GLOBAL_SITES))


@GMM_ROUTES.register("map")
def fit_map(x, model, *, restarts=5, seed=0, tol=1e-3, max_iter=100, reg_covar=1e-6, **_):
    """Posterior mode by EM (:func:`~pyro_vae.inference.gmm_em.em`), components ordered."""
    params, info = em(x, model, restarts=restarts, seed=seed, tol=tol, max_iter=max_iter,
                      reg_covar=reg_covar)
    return params.ordered(), None, info


@GMM_ROUTES.register("vi")
def fit_vi(x, model, *, restarts=5, seed=0, reg_covar=1e-6, steps=500, lr=0.02,
           num_draws=100, guide="normal", log: TrainingLog | None = None, **_):
    """Gaussian variational posterior on the globals (mean-field or full-rank), from the MAP.

    With ``log``, every :data:`~pyro_vae.train.CHECK_EVERY` steps and at the last it gets
    ``train/elbo``, the mean ELBO of those steps in nats per point (``SVI.step`` reads each
    loss to the host already: logging adds no synchronisation), and the learning rate.
    """
    start, _ = em(x, model, restarts=restarts, seed=seed, reg_covar=reg_covar)
    start = start.ordered()
    pyro.set_rng_seed(seed)
    # SVI keeps the autoguide's parameters in the global param store: a previous fit's entries
    # (another K, or the same K) would otherwise be resumed or clash in shape
    pyro.clear_param_store()
    guide_class = {"normal": AutoNormal, "mvn": AutoMultivariateNormal}[guide]
    auto = guide_class(_globals_only(model), init_loc_fn=init_to_value(values=start.sites()))
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    svi = SVI(model, auto, pyro.optim.ClippedAdam({"lr": lr}), elbo)
    losses = []
    if log is not None:
        log.start(0)
        last_check = time.perf_counter()
    for step in range(1, steps + 1):
        losses.append(svi.step(x) / x.shape[0])
        if log is not None and (step % CHECK_EVERY == 0 or step == steps):
            since = losses[(step - 1) // CHECK_EVERY * CHECK_EVERY:]
            now = time.perf_counter()
            check = Check(bad_run=0, elbo=-sum(since) / len(since), grad_norm=math.nan,
                          examples=len(since) * x.shape[0])
            log.check(step, check, lr, now - last_check, skipped_steps=0)
            last_check = now
    priors = model.prior_distributions()
    draws = Predictive(auto, num_samples=num_draws, return_sites=tuple(priors),
                       parallel=True)(x)
    # (S, K) etc.: Predictive pads the weights, outside the components plate, to (S, 1, K)
    samples = MixtureParams.from_sites({name: draws[name].reshape(num_draws, *prior.shape())
                                        for name, prior in priors.items()}).ordered()
    return _posterior_mean(samples), samples, {"final_elbo_per_point": -losses[-1], "steps": steps}


def unconstrained_potential(model: GaussianMixtureModel, x: torch.Tensor):
    """-log p(x, theta) in unconstrained coordinates, the assignments summed out exactly.

    Each global site lives in R^n through ``biject_to`` of its prior's support (stick-breaking
    for the weights, exp for the scales, the LKJ Cholesky transform), with the log-Jacobian
    added: the density NUTS needs.  This is :func:`~pyro_vae.models.gmm_density.log_joint`,
    the model's log density with the assignment enumerated (``tests/test_gmm.py`` checks NUTS
    on it against NUTS on the traced model); in closed form it costs one (N, K) log-sum-exp
    per gradient, not a Pyro trace.

    Returns
    -------
    (potential, transforms): ``potential`` maps {site: unconstrained tensor} to a scalar;
    ``transforms[site]`` maps a site's unconstrained value to its constrained one.
    """
    priors = model.prior_distributions()  # built once: the potential runs thousands of times
    transforms = {name: biject_to(prior.support) for name, prior in priors.items()}

    def potential(unconstrained: dict[str, torch.Tensor]) -> torch.Tensor:
        values = {name: t(unconstrained[name]) for name, t in transforms.items()}
        log_density = log_marginal(x, MixtureParams.from_sites(values)).sum()
        for name, t in transforms.items():
            log_density = log_density + priors[name].log_prob(values[name]).sum()
            jacobian = t.log_abs_det_jacobian(unconstrained[name], values[name])
            log_density = log_density + jacobian.sum()
        return -log_density

    return potential, transforms


@GMM_ROUTES.register("nuts")
def fit_nuts(x, model, *, restarts=5, seed=0, reg_covar=1e-6, num_samples=200,
             warmup_steps=200, num_chains=2, **_):
    """NUTS on the globals with z summed out; chains run one after another from the MAP.

    Chain c is seeded with ``seed + c``; r-hat and ESS are computed across the
    ``num_chains`` chains (split r-hat within the one chain if ``num_chains`` = 1).
    """
    check_draws(num_samples)
    if num_chains < 1:
        raise UserError(f"--chains must be at least 1, got {num_chains}")
    start, _ = em(x, model, restarts=restarts, seed=seed, reg_covar=reg_covar)
    start = start.ordered()
    potential, transforms = unconstrained_potential(model, x)
    init = {name: t.inv(start.sites()[name]).detach() for name, t in transforms.items()}
    chains = []
    for chain in range(num_chains):
        pyro.set_rng_seed(seed + chain)
        mcmc = MCMC(NUTS(potential_fn=potential), num_samples=num_samples,
                    warmup_steps=warmup_steps, initial_params=init,
                    disable_progbar=not live_bars())
        mcmc.run()
        values = {name: t(mcmc.get_samples()[name]) for name, t in transforms.items()}
        chains.append(MixtureParams.from_sites(values).ordered())
    # (chains, draws, ...) for the diagnostics, then all draws pooled
    locs = torch.stack([c.locs for c in chains])
    weights = torch.stack([c.weights for c in chains])
    ess_locs, rhat_locs = ess_and_rhat(locs)
    ess_weights, rhat_weights = ess_and_rhat(weights)
    rhat = torch.cat([rhat_locs.flatten(), rhat_weights])
    ess = torch.cat([ess_locs.flatten(), ess_weights])
    pooled = MixtureParams(*(torch.cat([getattr(c, f) for c in chains])
                             if getattr(chains[0], f) is not None else None
                             for f in ("weights", "locs", "scales", "chol_corr")))
    info = {"max_rhat": rhat.max().item(), "min_ess": ess.min().item(),
            "num_samples": num_samples, "warmup_steps": warmup_steps, "num_chains": num_chains}
    return _posterior_mean(pooled), pooled, info


def fit_gmm(
    x, num_components: int, covariance: str = "diag", inference: str = "map", *,
    seed: int = 0, **options,
) -> GMMFit:
    """Fit a K-component mixture to x (N, D) by the route ``inference``.

    ``options`` go to the route (``restarts``, ``tol``, ``reg_covar`` for ``map``;
    ``steps``, ``lr``, ``guide`` for ``vi``; ``num_samples``, ``warmup_steps``,
    ``num_chains`` for ``nuts``).
    """
    route = GMM_ROUTES.get(inference)
    x = check_data(x)
    model = build_model(x, num_components, covariance)
    start = time.perf_counter()
    params, samples, info = route(x, model, seed=seed, **options)
    return GMMFit(model, params, inference, time.perf_counter() - start, samples, info)


def select_components(
    x_train, x_test, ks, covariance: str = "diag", inference: str = "map", *,
    seed: int = 0, **options,
) -> list[dict]:
    """Held-out log-likelihood, BIC and AIC for each K in ``ks`` (one dict per K).

    Log-likelihoods are nats per point (higher is better); BIC and AIC use the total
    training log-likelihood at the point estimate (lower is better).
    """
    x_train, x_test = check_data(x_train, "training data"), check_data(x_test, "test data")
    return [selection_row(fit_gmm(x_train, k, covariance, inference, seed=seed, **options),
                          x_train, x_test) for k in ks]


def selection_row(fitted: GMMFit, x_train: torch.Tensor, x_test: torch.Tensor) -> dict:
    """One K's row of :func:`select_components` for a fit to x_train (N, D).

    Train and test log-likelihoods in nats per point (the test one as
    :meth:`GMMFit.log_likelihood` scores it), BIC and AIC from the total training
    log-likelihood at the point estimate, and the fit's seconds.
    """
    total = log_marginal(x_train, fitted.params).sum().item()
    (n, d), k = x_train.shape, fitted.model.num_components
    return {
        "components": k,
        "train_log_likelihood": total / n,
        "test_log_likelihood": fitted.log_likelihood(x_test).mean().item(),
        "bic": bic(total, n, k, d, fitted.model.covariance),
        "aic": aic(total, k, d, fitted.model.covariance),
        "seconds": fitted.seconds,
    }
