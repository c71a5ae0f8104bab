"""Fitting the Gaussian mixture of :mod:`pyro_vae.models.gmm`: three routes, one result type.

Routes (registry :data:`GMM_ROUTES`):

``map``
    The posterior mode by EM on the Pyro model's own terms.  The E-step evaluates
    log alpha_j + log N(x_i; mu_j, Sigma_j) - the densities the model's ``obs`` site uses,
    written as matrix products so no (N, K, D) tensor is formed - and normalises them into
    responsibilities.  The M-step maximises the expected complete-data log joint
    E_r[log p(x, z | theta)] + log p(theta) in closed form, one block at a time (ECM):
    weights under the Dirichlet, means under their Normal prior given the covariances,
    then the covariances.  Diagonal scales are the exact MAP under their LogNormal prior
    (a concave 1-D problem per scale, solved by Newton); for ``full`` covariances the LKJ and
    LogNormal terms (O(1) against the O(N_j) likelihood) are left out of the covariance
    update, so that block is the ML update.  Every variance gets ``reg_covar`` added, as in
    scikit-learn, so a component that shrinks onto one point stays finite.  Restarts start
    from k-means (k-means++ seeding, then Lloyd iterations); the best by log-likelihood wins,
    and a restart that clearly cannot catch the best finished one is abandoned (:func:`em`).
    The objective this maximises is exactly ``-TraceEnum_ELBO`` with point-mass (AutoDelta)
    guides on the globals (``tests/test_gmm.py`` checks the identity).
``vi``
    ``AutoNormal`` (or ``AutoMultivariateNormal``) on the globals with the assignments summed
    out by ``TraceEnum_ELBO``, started at the MAP fit.
``nuts``
    NUTS on the globals with the assignments summed out, started at the MAP fit.  Its
    potential is the same log joint (the enumerated sum, in closed form), mapped to R^n by
    the priors' ``biject_to`` transforms: the same draws as NUTS on the traced model
    (tested), without building a Pyro trace per gradient (2.5x faster, measured here).
    Every draw is relabelled (:meth:`MixtureParams.ordered`) before any summary or r-hat.

Generic SVI on this model is far slower than EM and stops short of its optimum (measured:
13 s and 1.1 nats/point worse than EM's 0.05 s on 16000 x 10-D points, DESIGN.md); EM on the
model's own terms matches scikit-learn's EM (``benchmarks/gmm_vs_sklearn.py``).  The
Bayesian routes are for uncertainty, not for speed.
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
from pyro.infer import MCMC, NUTS, SVI, TraceEnum_ELBO
from pyro.infer.autoguide import AutoMultivariateNormal, AutoNormal, init_to_value

from ..errors import UserError
from ..models.gmm import GLOBAL_SITES, GaussianMixtureModel, GMMPriors, MixtureParams
from ..registry import Registry
from .diagnostics import ess_and_rhat

__all__ = [
    "GMM_ROUTES",
    "GMMFit",
    "aic",
    "bic",
    "build_model",
    "check_data",
    "component_log_density",
    "em",
    "fit_gmm",
    "kmeans_init",
    "log_joint",
    "log_marginal",
    "num_parameters",
    "random_mixture",
    "responsibilities",
    "sample_mixture",
    "select_components",
]

GMM_ROUTES = Registry("gmm inference")
DTYPE = torch.float64  # EM's log-sum-exp of K large negative numbers wants the precision
LOG_2PI = math.log(2 * math.pi)


# ---------------------------------------------------------------------------- densities


def _precision_cholesky(params: MixtureParams) -> torch.Tensor:
    """(K, D, D) upper-triangular U with Sigma^{-1} = U U^T (so (x - mu) U is whitened)."""
    tril = params.scale_tril()
    eye = torch.eye(params.dim, dtype=tril.dtype).expand_as(tril)
    return torch.linalg.solve_triangular(tril, eye, upper=False).transpose(-1, -2)


# Row blocks keep every per-iteration temporary of the full-covariance E- and M-steps at about
# this many elements (2 MiB in float64): blocks that small are recycled by malloc, whereas a
# fresh (N, D) array per component and iteration comes from the kernel page by page
# (measured: 300k-500k page faults, half the time of a 20000 x 50-D, K=4 full-covariance fit)
_BLOCK_ELEMENTS = 1 << 18


def _row_blocks(x: torch.Tensor, width: int) -> tuple[torch.Tensor, ...]:
    """x (N, ...) split into row blocks of about ``_BLOCK_ELEMENTS / width`` rows."""
    return x.split(max(1, _BLOCK_ELEMENTS // width))


def _whitened_sq_norms(
    x: torch.Tensor, prec_chol: torch.Tensor, locs: torch.Tensor
) -> torch.Tensor:
    """||(x_i - mu_j) U_j||^2 for all i, j: x (N, D), U (K, D, D), mu (K, D) -> (N, K).

    All K whitenings in one matrix product per row block: x_i [U_1 ... U_K] - [mu_1 U_1 ...].
    """
    k, d = locs.shape
    u = prec_chol.transpose(0, 1).reshape(d, k * d)  # (D, K D): the U_j side by side
    shift = (locs.unsqueeze(1) @ prec_chol).reshape(k * d)  # (K D): the mu_j U_j
    return torch.cat([
        torch.addmm(shift, block, u, beta=-1).square_().view(-1, k, d).sum(-1)
        for block in _row_blocks(x, k * d)
    ])


def _diag_features(x: torch.Tensor) -> torch.Tensor:
    """[x * x, x]: (N, 2D); one matrix product with it gives every diagonal quadratic form."""
    return torch.cat([x * x, x], dim=-1)


def component_log_density(
    x: torch.Tensor, params: MixtureParams, features: torch.Tensor | None = None
) -> torch.Tensor:
    """log N(x_i; mu_j, Sigma_j) for all i, j: (N, D) -> (N, K).

    The same numbers as ``model.component_distribution(params).log_prob(x[:, None])``,
    computed as matrix products: memory O(N K + N D) instead of O(N K D) (full covariances
    go through row blocks of bounded size).
    ``features`` (diagonal case only) is ``_diag_features(x)``, precomputed by EM.
    """
    d = params.dim
    if params.chol_corr is None:
        features = _diag_features(x) if features is None else features
        precision = params.scales.pow(-2)  # (K, D)
        weights = torch.cat([precision, -2 * params.locs * precision], dim=-1)  # (K, 2D)
        quad = features @ weights.T + (params.locs.pow(2) * precision).sum(-1)
        log_det = 2 * params.scales.log().sum(-1)
        return -0.5 * (d * LOG_2PI + log_det + quad)
    prec_chol = _precision_cholesky(params)
    quad = _whitened_sq_norms(x, prec_chol, params.locs)
    log_det = -2 * torch.diagonal(prec_chol, dim1=-2, dim2=-1).log().sum(-1)
    return -0.5 * (d * LOG_2PI + log_det + quad)


def _joint_log_density(
    x: torch.Tensor, params: MixtureParams, features: torch.Tensor | None = None
) -> torch.Tensor:
    """log alpha_j + log N(x_i; mu_j, Sigma_j): (N, K)."""
    return params.weights.log() + component_log_density(x, params, features)


def log_marginal(x: torch.Tensor, params: MixtureParams) -> torch.Tensor:
    """log p(x_i | theta) = logsumexp_j [log alpha_j + log N(x_i; mu_j, Sigma_j)]: (N,)."""
    return torch.logsumexp(_joint_log_density(x, params), dim=-1)


def responsibilities(x: torch.Tensor, params: MixtureParams) -> torch.Tensor:
    """p(z_i = j | x_i, theta): (N, K), rows sum to one (the closed form of infer_discrete)."""
    return torch.softmax(_joint_log_density(x, params), dim=-1)


def log_joint(model: GaussianMixtureModel, params: MixtureParams, x: torch.Tensor) -> torch.Tensor:
    """log p(x, theta) = sum_i log p(x_i | theta) + log p(theta): the MAP objective (scalar)."""
    return log_marginal(x, params).sum() + model.log_prior(params)


# ---------------------------------------------------------------------------- sampling


def sample_mixture(
    params: MixtureParams, n: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw n points the lecture's way: index j ~ alpha, then x ~ N(mu_j, Sigma_j).

    Returns
    -------
    x : (n, D) tensor
    z : (n,) long tensor, the component each point came from.

    The Pyro model run with ``x=None`` does the same; this loop over components avoids
    gathering an (n, D, D) stack of Cholesky factors for large n.
    """
    z = torch.multinomial(params.weights, n, replacement=True, generator=generator)
    eps = torch.randn(n, params.dim, generator=generator, dtype=params.locs.dtype)
    tril = params.scale_tril()
    x = torch.empty_like(eps)
    for j in range(params.num_components):
        rows = z == j
        x[rows] = params.locs[j] + eps[rows] @ tril[j].T
    return x, z


def random_mixture(
    k: int, d: int, *, separation: float = 4.0, anisotropy: float = 1.0,
    full: bool = False, seed: int = 0,
) -> MixtureParams:
    """Random ground-truth parameters for simulations.

    Means are ``separation`` x N(0, I) (so ``separation`` ~ 4 is well separated, ~ 1 overlapping
    for unit-scale components); scales are log-uniform over a range of ``anisotropy`` (1 =
    spherical); ``full`` adds random correlations (LKJ(1)).  Weights ~ Dirichlet(5).
    """
    g = torch.Generator().manual_seed(seed)
    # Gamma(5, 1) is a sum of five Exp(1) draws; normalised Gammas are Dirichlet(5)
    gammas = -torch.rand(k, 5, generator=g, dtype=DTYPE).log().sum(-1)
    weights = gammas / gammas.sum()
    locs = separation * torch.randn(k, d, generator=g, dtype=DTYPE)
    u = torch.rand(k, d, generator=g, dtype=DTYPE)
    scales = torch.exp((u - 0.5) * math.log(anisotropy))
    chol = None
    if full and d >= 2:
        with torch.random.fork_rng():  # LKJCholesky has no generator argument
            torch.manual_seed(seed)
            chol = pyro.distributions.LKJCholesky(d, torch.tensor(1.0, dtype=DTYPE)).sample((k,))
    return MixtureParams(weights, locs, scales, chol)


# ---------------------------------------------------------------------------- model building


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


# ---------------------------------------------------------------------------- EM (map route)


def kmeans_init(
    x: torch.Tensor, k: int, generator: torch.Generator, max_iter: int = 100, tol: float = 1e-4
) -> torch.Tensor:
    """Hard k-means labels (N,) from k-means++ seeding followed by Lloyd iterations.

    k-means++ draws each new centre with probability proportional to the squared distance
    to the nearest centre so far (2 + log k candidates, the greedy variant), which spreads
    the seeds over the data and so guards against starting all components in one cluster.
    Lloyd stops when no label changes or the centres move less than ``tol`` x the mean
    variance (scikit-learn's KMeans criteria).  It runs in float32 on the (D, N) transpose:
    only the labels leave this function, and they seed EM, which works in float64.
    """
    return _kmeans_labels(x.T.float().contiguous(), k, generator, max_iter, tol)[0]


def _kmeans_labels(
    x_t: torch.Tensor, k: int, generator, max_iter: int, tol: float
) -> tuple[torch.Tensor, float]:
    """:func:`kmeans_init` on data already transposed to (D, N): (labels (N,), inertia).

    The inertia is the mean squared distance of the points to their nearest final centre.
    """
    n = x_t.shape[1]
    sq_norm = (x_t * x_t).sum(0)  # (N,)

    def sq_dist(centres):  # (C, N): ||x||^2 - 2 c.x + ||c||^2, clamped against round-off
        centre_norm = (centres * centres).sum(-1, keepdim=True)
        return (sq_norm - 2 * centres @ x_t + centre_norm).clamp_min(0)

    def nearest(centres):  # ||x||^2 is the same for every centre: leave it out of the argmin
        scores = torch.addmm((centres * centres).sum(-1, keepdim=True), centres, x_t, alpha=-2)
        return scores.min(0)  # values: squared distances less ||x||^2

    first = torch.randint(n, (1,), generator=generator)
    centres = x_t[:, first].T
    closest = sq_dist(centres)[0]
    trials = 2 + int(math.log(k))
    for _ in range(1, k):
        if closest.sum() <= 0:  # fewer distinct points than k: any point will do
            candidates = torch.randint(n, (trials,), generator=generator)
        else:
            candidates = torch.multinomial(closest, trials, replacement=True, generator=generator)
        potential = torch.minimum(closest, sq_dist(x_t[:, candidates].T))  # (trials, N)
        best = potential.sum(-1).argmin()
        centres = torch.cat([centres, x_t[:, candidates[best]][None]])
        closest = potential[best]
    # tol x the mean per-coordinate variance, from the squared norms already at hand
    shift_tol = tol * (sq_norm.mean() - x_t.mean(-1).pow(2).sum()) / x_t.shape[0]
    labels = nearest(centres).indices
    for _ in range(max_iter):
        counts = torch.bincount(labels, minlength=k).to(x_t.dtype)
        sums = x_t.new_zeros(x_t.shape[0], k).index_add_(1, labels, x_t).T
        new = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centres)
        shift = (new - centres).pow(2).sum()
        centres, previous = new, labels
        closest, labels = nearest(centres)
        if shift <= shift_tol or torch.equal(labels, previous):
            break
    return labels, (closest.sum() + sq_norm.sum()).item() / n


def _m_step(
    x: torch.Tensor, features: torch.Tensor | None, resp: torch.Tensor,
    model: GaussianMixtureModel, prior_loc: torch.Tensor, previous: MixtureParams | None,
    reg_covar: float,
) -> MixtureParams:
    """Closed-form (blockwise) maximiser of E_resp[log p(x, z | theta)] + log p(theta).

    ``x`` is centred by EM; ``prior_loc`` is the prior mean of the locations in the same frame.
    """
    priors = model.priors
    nk = resp.sum(0) + 10 * torch.finfo(resp.dtype).eps  # empty components stay finite
    # weights: mode of Dirichlet(c + N_k); c = 1 gives the ML weights N_k / N
    counts = (nk + priors.concentration - 1).clamp_min(torch.finfo(resp.dtype).tiny)
    weights = counts / counts.sum()
    if features is not None:  # diagonal: both moments from one product
        sxx, sx = (resp.T @ features).chunk(2, dim=-1)  # (K, D) each
    else:
        sx = resp.T @ x
    # means given the previous covariances: precision-weighted average with the prior
    lam0 = priors.loc_scale**-2
    if previous is None:  # first step from hard labels: no covariance yet to weigh the prior by
        locs = sx / nk[:, None]
    elif previous.chol_corr is None:
        precision = previous.scales.pow(-2)
        locs = (sx * precision + lam0 * prior_loc) / (nk[:, None] * precision + lam0)
    else:
        prec_chol = _precision_cholesky(previous)
        precision = prec_chol @ prec_chol.transpose(-1, -2)  # (K, D, D)
        lhs = nk[:, None, None] * precision + lam0 * torch.eye(model.dim, dtype=x.dtype)
        rhs = (precision @ sx.unsqueeze(-1)).squeeze(-1) + lam0 * prior_loc
        locs = torch.linalg.solve(lhs, rhs)
    if features is None:
        # sum_i r_ij (x_i - mu_j)(x_i - mu_j)^T = x^T R_j x - sx mu^T - mu sx^T + N_j mu mu^T
        second = _second_moments(x, resp)
        cross = sx.unsqueeze(-1) * locs.unsqueeze(-2)
        scatter = second - cross - cross.transpose(-1, -2) + nk[:, None, None] * (
            locs.unsqueeze(-1) * locs.unsqueeze(-2))
        covs = scatter / nk[:, None, None] + reg_covar * torch.eye(model.dim, dtype=x.dtype)
        if model.has_correlations:
            return MixtureParams.from_covariances(weights, locs, covs, full=True)
        scales = torch.diagonal(covs, dim1=-2, dim2=-1).sqrt()  # full with D = 1
        return MixtureParams(weights, locs, scales)
    scatter = (sxx - 2 * locs * sx + nk[:, None] * locs.pow(2)).clamp_min(0)  # (K, D)
    scales = _map_log_normal_scales(scatter, nk[:, None], priors)
    return MixtureParams(weights, locs, (scales.pow(2) + reg_covar).sqrt())


def _second_moments(x: torch.Tensor, resp: torch.Tensor) -> torch.Tensor:
    """sum_i r_ij x_i x_i^T for all j: x (N, D), resp (N, K) -> (K, D, D).

    Per row block, one (D, rows) x (rows, D) product per component, accumulated in place.
    For small D that beats one (K D, rows) x (rows, D) product for all K, a shape BLAS does
    badly (measured: 2.1 vs 2.8 ms at 16000 x 10-D, K=5; 4.6 vs 7.0 ms at 100000 x 5-D,
    K=4); at 50-D the two take the same time.
    """
    k, d = resp.shape[1], x.shape[1]
    total = x.new_zeros(k, d, d)
    for block, r in zip(_row_blocks(x, d), _row_blocks(resp, d), strict=True):
        for j in range(k):
            total[j].addmm_((block * r[:, j, None]).T, block)
    return total


def _map_log_normal_scales(
    scatter: torch.Tensor, nk: torch.Tensor, priors: GMMPriors, iters: int = 30
) -> torch.Tensor:
    """argmax_sigma  sum_i r_i log N(x_i; mu, sigma^2) + log LogNormal(sigma; log s0, v).

    In t = log sigma the objective f(t) = -(N_k + 1) t - S e^{-2t} / 2 - (t - m)^2 / (2 v^2)
    (S the weighted scatter; the +1 is the LogNormal's 1/sigma) is strictly concave; f' is
    decreasing and convex, so Newton from the ML value (right of the root) converges
    monotonically.
    """
    m = priors.scale_median.log()
    inv_v2 = priors.scale_log_sd**-2
    log_scatter = scatter.log()  # -inf where a component has no spread: e below is then 0
    # start: the ML value where S > 0; the exact optimum m - (N_k + 1) v^2 where S = 0
    t = torch.where(scatter > 0, 0.5 * (log_scatter - (nk + 1).log()), m - (nk + 1) / inv_v2)
    for _ in range(iters):
        e = torch.exp(log_scatter - 2 * t)
        step = (e - (nk + 1) - (t - m) * inv_v2) / (2 * e + inv_v2)
        t = t + step
        if step.abs().max() < 1e-10:
            break
    return t.exp()


_SINGULAR = (
    "a component's covariance became singular (reg_covar={reg_covar:g}): the data have a "
    "constant or duplicated direction; pass --reg-covar 1e-6 or more, or drop those columns"
)


def em(
    x: torch.Tensor, model: GaussianMixtureModel, *, restarts: int = 1, seed: int = 0,
    tol: float = 1e-3, max_iter: int = 100, reg_covar: float = 1e-6,
) -> tuple[MixtureParams, dict]:
    """MAP fit by EM with ``restarts`` k-means starts; the best log-likelihood wins.

    All k-means starts are drawn first; EM then runs from the tightest partition (lowest
    k-means inertia) to the loosest, and a restart is abandoned once it lies so far below the
    best finished one that ``_CATCH_UP`` times its latest per-iteration gain, kept up for
    all its remaining iterations, would not close the gap.  Restarts stuck in a poor optimum
    crawl on for 10-20 iterations; abandoning them cut the EM iterations of the 20000 x 50-D,
    K=4 full benchmark fits from 322 to 211 (20 fits).  It is a heuristic: EM gains usually
    shrink as a run settles, but can grow again after a slow stretch (when two components
    pull apart: a run stuck 2.2 nats/point below the best, gaining 0.002 per iteration, was
    seen to reach the best after 16 more).  Measured: on the benchmark's settings (210
    fits, 630 restarts, 50 abandoned) and on 800 random small mixtures no winner changed by
    more than 1e-3 nats/point; in 800 other random mixtures, runs that went on to reach
    their fit's best optimum were at some iteration behind it by up to 11 x (gain x
    iterations left): more than 1 x in 24 of them, more than 10 x in one, never 30 x.

    Parameters
    ----------
    x : (N, D) float64 tensor
    tol : float
        Stop when the mean log-likelihood per point changes by less than ``tol`` between
        iterations (scikit-learn's criterion and default).
    reg_covar : float
        Added to every variance (scikit-learn's default too).

    Returns
    -------
    (params, info): ``info["restarts"]`` lists, in the order of the k-means draws, each
    restart's iterations, convergence and abandonment flags, k-means inertia and mean
    log-likelihood per point (the one that selects the winner; at abandonment for the
    abandoned).
    """
    if restarts < 1:
        raise UserError(f"--restarts must be at least 1, got {restarts}")
    # work in centred coordinates: the moment formulas then lose no digits to a far-off mean
    shift = x.mean(0)
    x = x - shift
    prior_loc = model.priors.loc - shift
    features = None if model.covariance == "full" else _diag_features(x)
    x_t = x.T.float().contiguous()  # the k-means starts' copy, made once for every restart
    generator = torch.Generator().manual_seed(seed)
    # Lloyd stops once the centres move less than 1e-3 (KMeans: 1e-4) x the mean variance: EM
    # refines the partition anyway.  Measured on the benchmark's settings (5 seeds each): the
    # same held-out log-likelihoods (within 1e-5) and EM iterations, diag fits 15-27% faster
    starts = [_kmeans_labels(x_t, model.num_components, generator, 100, 1e-3)
              for _ in range(restarts)]
    best, best_params, runs = None, None, [None] * restarts
    for r in sorted(range(restarts), key=lambda r: starts[r][1]):
        labels, inertia = starts[r]
        target = -math.inf if best is None else best["log_likelihood"]
        try:
            params, run = _em_run(x, features, labels, model, prior_loc, tol, max_iter,
                                  reg_covar, target)
        except torch.linalg.LinAlgError:  # a Cholesky factorization of a singular covariance
            raise UserError(_SINGULAR.format(reg_covar=reg_covar)) from None
        runs[r] = {**run, "inertia": inertia}
        if not run["abandoned"] and (best is None or run["log_likelihood"] > target):
            best, best_params = run, params
    best = MixtureParams(best_params.weights, best_params.locs + shift, best_params.scales,
                         best_params.chol_corr)
    return best, {"restarts": runs}


# see :func:`em`: a restart is abandoned when even this many times its latest gain, for every
# iteration left, would leave it below the best finished restart
_CATCH_UP = 30


def _em_run(x, features, labels, model, prior_loc, tol, max_iter, reg_covar, target):
    """One EM run on x (N, D) from hard k-means labels (N,): (params, summary).

    The run is abandoned (``summary["abandoned"]``) when its log-likelihood per point plus
    ``_CATCH_UP`` times its latest gain for each iteration left stays below ``target``, the
    best finished run's.
    """
    resp = torch.nn.functional.one_hot(labels, model.num_components).to(x.dtype)
    params = _m_step(x, features, resp, model, prior_loc, None, reg_covar)
    ll, converged, abandoned, iterations = -math.inf, False, False, 0
    while iterations < max_iter:
        iterations += 1
        joint = _joint_log_density(x, params, features)
        # log-sum-exp and softmax sharing one exp of the (N, K) array, in place
        top = joint.max(-1, keepdim=True).values
        unnormalized = joint.sub_(top).exp_()
        total = unnormalized.sum(-1, keepdim=True)
        previous_ll, ll = ll, (top + total.log()).mean().item()
        if not math.isfinite(ll):
            raise UserError(_SINGULAR.format(reg_covar=reg_covar))
        if ll + _CATCH_UP * (max_iter - iterations) * max(ll - previous_ll, 0.0) < target:
            abandoned = True
            break
        resp = unnormalized.div_(total)
        params = _m_step(x, features, resp, model, prior_loc, params, reg_covar)
        if abs(ll - previous_ll) < tol:
            converged = True
            break
    return params, {"iterations": iterations, "converged": converged, "abandoned": abandoned,
                    "log_likelihood": ll}


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
    samples : MixtureParams or None
        Relabelled posterior draws, every field with a leading (S,) dim.
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
        per_draw = torch.stack([log_marginal(x, _draw(self.samples, s)) for s in draws])
        return torch.logsumexp(per_draw, 0) - math.log(per_draw.shape[0])


def _draw(samples: MixtureParams, s: int) -> MixtureParams:
    chol = None if samples.chol_corr is None else samples.chol_corr[s]
    return MixtureParams(samples.weights[s], samples.locs[s], samples.scales[s], chol)


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
    """Posterior mode by EM (see the module docstring)."""
    params, info = em(x, model, restarts=restarts, seed=seed, tol=tol, max_iter=max_iter,
                      reg_covar=reg_covar)
    return params.ordered(), None, info


@GMM_ROUTES.register("vi")
def fit_vi(x, model, *, restarts=5, seed=0, reg_covar=1e-6, steps=500, lr=0.02,
           num_draws=100, guide="normal", **_):
    """Gaussian variational posterior on the globals (mean-field or full-rank), from the MAP."""
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
    losses = [svi.step(x) / x.shape[0] for _ in range(steps)]
    with torch.no_grad():  # calling the autoguide draws the globals from q
        draws = [auto(x) for _ in range(num_draws)]
    samples = MixtureParams.from_sites({name: torch.stack([d[name] for d in draws])
                                        for name in draws[0]}).ordered()
    return _posterior_mean(samples), samples, {"final_elbo_per_point": -losses[-1], "steps": steps}


def _unconstrained_potential(model: GaussianMixtureModel, x: torch.Tensor):
    """-log p(x, theta) in unconstrained coordinates, the assignments summed out exactly.

    Each global site lives in R^n through ``biject_to`` of its prior's support (stick-breaking
    for the weights, exp for the scales, the LKJ Cholesky transform), with the log-Jacobian
    added: the density NUTS needs.  This is :func:`log_joint`, the model's log density with
    the assignment enumerated (``tests/test_gmm.py`` checks it against ``TraceEnum_ELBO``); in
    closed form it costs one (N, K) log-sum-exp per gradient, not a Pyro trace.
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
    """NUTS on the globals with z summed out; chains run one after another from the MAP."""
    start, _ = em(x, model, restarts=restarts, seed=seed, reg_covar=reg_covar)
    start = start.ordered()
    potential, transforms = _unconstrained_potential(model, x)
    init = {name: t.inv(start.sites()[name]).detach() for name, t in transforms.items()}
    chains = []
    for chain in range(num_chains):
        pyro.set_rng_seed(seed + chain)
        mcmc = MCMC(NUTS(potential_fn=potential), num_samples=num_samples,
                    warmup_steps=warmup_steps, initial_params=init, disable_progbar=True)
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
    rows = []
    for k in ks:
        fitted = fit_gmm(x_train, k, covariance, inference, seed=seed, **options)
        total = log_marginal(x_train, fitted.params).sum().item()
        n, d = x_train.shape
        rows.append({
            "components": k,
            "train_log_likelihood": total / n,
            "test_log_likelihood": fitted.log_likelihood(x_test).mean().item(),
            "bic": bic(total, n, k, d, covariance),
            "aic": aic(total, k, d, covariance),
            "seconds": fitted.seconds,
        })
    return rows
