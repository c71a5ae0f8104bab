"""EM for the Gaussian mixture's posterior mode (the ``map`` route), started from k-means.

EM on the Pyro model's own terms (:mod:`pyro_vae.models.gmm_density`).  The E-step evaluates
log alpha_j + log N(x_i; mu_j, Sigma_j) - the densities the model's ``obs`` site uses,
written as matrix products so no (N, K, D) tensor is formed - and normalises them into
responsibilities r_ij = p(z_i = j | x_i, theta).  The M-step maximises the expected
complete-data log joint E_r[log p(x, z | theta)] + log p(theta) in closed form, one block at
a time (ECM), with N_j = sum_i r_ij:

    alpha_j = (N_j + c - 1) / sum_l (N_l + c - 1)          mode of Dirichlet(c + N)
    mu_j    = (N_j P_j + lambda0 I)^{-1} (P_j sum_i r_ij x_i + lambda0 m0)
              given the previous precision P_j = Sigma_j^{-1} and lambda0 = tau0^{-2}
    Sigma_j = sum_i r_ij (x_i - mu_j)(x_i - mu_j)^T / N_j + reg_covar I      (full)

Diagonal scales are the exact MAP under their LogNormal prior (a concave 1-D problem per
scale, solved by Newton); for ``full`` covariances the LKJ and LogNormal terms (O(1) against
the O(N_j) likelihood) are left out of the covariance update, so that block is the ML update
(with D = 1 a ``full`` model has no correlation site: it is the diagonal model, fitted alike).
Every variance gets ``reg_covar`` > 0 added, as in scikit-learn, so a component that shrinks
onto one point stays finite.  Restarts start from k-means (k-means++ seeding, then Lloyd
iterations); the best by the log-likelihood of its final parameters wins, and a restart that
clearly cannot catch the best finished one is abandoned (:func:`em`).  The objective this
maximises is exactly ``-TraceEnum_ELBO`` with point-mass (AutoDelta) guides on the globals
(``tests/test_gmm.py`` checks the identity).
"""

from __future__ import annotations

import math

import torch

from ..errors import UserError
from ..models.gmm import GaussianMixtureModel, GMMPriors, MixtureParams
from ..models.gmm_density import (
    diag_features,
    joint_log_density,
    precision_cholesky,
    row_blocks,
)

__all__ = ["CATCH_UP", "check_reg_covar", "em", "kmeans_init", "second_moments"]


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
        prec_chol = precision_cholesky(previous)
        precision = prec_chol @ prec_chol.transpose(-1, -2)  # (K, D, D)
        lhs = nk[:, None, None] * precision + lam0 * torch.eye(model.dim, dtype=x.dtype)
        rhs = (precision @ sx.unsqueeze(-1)).squeeze(-1) + lam0 * prior_loc
        locs = torch.linalg.solve(lhs, rhs)
    if features is None:
        # sum_i r_ij (x_i - mu_j)(x_i - mu_j)^T = x^T R_j x - sx mu^T - mu sx^T + N_j mu mu^T
        second = second_moments(x, resp)
        cross = sx.unsqueeze(-1) * locs.unsqueeze(-2)
        scatter = second - cross - cross.transpose(-1, -2) + nk[:, None, None] * (
            locs.unsqueeze(-1) * locs.unsqueeze(-2))
        covs = scatter / nk[:, None, None] + reg_covar * torch.eye(model.dim, dtype=x.dtype)
        return MixtureParams.from_covariances(weights, locs, covs, full=True)
    scatter = (sxx - 2 * locs * sx + nk[:, None] * locs.pow(2)).clamp_min(0)  # (K, D)
    scales = _map_log_normal_scales(scatter, nk[:, None], priors)
    return MixtureParams(weights, locs, (scales.pow(2) + reg_covar).sqrt())


def second_moments(x: torch.Tensor, resp: torch.Tensor) -> torch.Tensor:
    """sum_i r_ij x_i x_i^T for all j: x (N, D), resp (N, K) -> (K, D, D).

    Per row block, one (D, rows) x (rows, D) product per component, accumulated in place.
    For small D that beats one (K D, rows) x (rows, D) product for all K, a shape BLAS does
    badly; at 50-D the two take the same time (``benchmarks/NOTES.md``).
    """
    k, d = resp.shape[1], x.shape[1]
    total = x.new_zeros(k, d, d)
    for block, r in zip(row_blocks(x, d), row_blocks(resp, d), strict=True):
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


def check_reg_covar(reg_covar: float) -> None:
    """A :class:`UserError` unless ``reg_covar`` is a positive finite number.

    With 0, nothing keeps a component that shrinks onto one point (or a constant coordinate)
    from a zero variance: ``full`` fails on a singular Cholesky factor, while ``diag``'s MAP
    scales only stop at the prior's pull (a fit with scales near 1e-8).  Both covariance types
    refuse it alike, before any fitting.
    """
    if not (isinstance(reg_covar, int | float) and math.isfinite(reg_covar) and reg_covar > 0):
        raise UserError(f"--reg-covar must be a positive number (default 1e-6), got {reg_covar}")


# see :func:`em`: a restart is abandoned when even this many times its latest gain, for every
# iteration left, would leave it below the best finished restart
CATCH_UP = 30


def em(
    x: torch.Tensor, model: GaussianMixtureModel, *, restarts: int = 1, seed: int = 0,
    tol: float = 1e-3, max_iter: int = 100, reg_covar: float = 1e-6,
    catch_up: float = CATCH_UP,
) -> tuple[MixtureParams, dict]:
    """MAP fit by EM with ``restarts`` k-means starts; the best log-likelihood wins.

    All k-means starts are drawn first; EM then runs from the tightest partition (lowest
    k-means inertia) to the loosest, and a restart is abandoned once it lies so far below the
    best finished one that ``catch_up`` times its latest per-iteration gain, kept up for
    all its remaining iterations, would not close the gap: restarts stuck in a poor optimum
    otherwise crawl on for 10-20 iterations.  It is a heuristic: EM gains usually shrink as a
    run settles, but can grow again after a slow stretch (when two components pull apart);
    ``catch_up`` = 30 is far above the largest ratio seen in runs that went on to reach their
    fit's best optimum (``benchmarks/NOTES.md``).

    Parameters
    ----------
    x : (N, D) float64 tensor
    tol : float
        Stop when the mean log-likelihood per point changes by less than ``tol`` between
        iterations (scikit-learn's criterion and default).
    reg_covar : float
        Added to every variance (scikit-learn's default too); must be positive.
    catch_up : float
        The abandonment margin above (``math.inf``: never abandon a restart).

    Returns
    -------
    (params, info): ``info["winner"]`` is the index of the restart returned;
    ``info["restarts"]`` lists, in the order of the k-means draws, each
    restart's iterations, convergence and abandonment flags, k-means inertia and mean
    log-likelihood per point at the parameters it returns (the one that selects the winner;
    for the abandoned, at abandonment).
    """
    if restarts < 1:
        raise UserError(f"--restarts must be at least 1, got {restarts}")
    check_reg_covar(reg_covar)
    # work in centred coordinates: the moment formulas then lose no digits to a far-off mean
    shift = x.mean(0)
    x = x - shift
    prior_loc = model.priors.loc - shift
    # full covariances with D = 1 have no correlation: the model is the diagonal one, so is EM
    features = None if model.has_correlations else diag_features(x)
    x_t = x.T.float().contiguous()  # the k-means starts' copy, made once for every restart
    generator = torch.Generator().manual_seed(seed)
    # Lloyd stops once the centres move less than 1e-3 (KMeans: 1e-4) x the mean variance: EM
    # refines the partition anyway (same optima, faster: benchmarks/NOTES.md)
    starts = [_kmeans_labels(x_t, model.num_components, generator, 100, 1e-3)
              for _ in range(restarts)]
    best, best_params, winner, runs = None, None, None, [None] * restarts
    for r in sorted(range(restarts), key=lambda r: starts[r][1]):
        labels, inertia = starts[r]
        target = -math.inf if best is None else best["log_likelihood"]
        try:
            params, run = _em_run(x, features, labels, model, prior_loc, tol, max_iter,
                                  reg_covar, target, catch_up)
        except torch.linalg.LinAlgError:  # a Cholesky factorization of a singular covariance
            raise UserError(_SINGULAR.format(reg_covar=reg_covar)) from None
        runs[r] = {**run, "inertia": inertia}
        if not run["abandoned"] and (best is None or run["log_likelihood"] > target):
            best, best_params, winner = run, params, r
    best = MixtureParams(best_params.weights, best_params.locs + shift, best_params.scales,
                         best_params.chol_corr)
    return best, {"restarts": runs, "winner": winner}



def _em_run(x, features, labels, model, prior_loc, tol, max_iter, reg_covar, target, catch_up):
    """One EM run on x (N, D) from hard k-means labels (N,): (params, summary).

    The run is abandoned (``summary["abandoned"]``) when its log-likelihood per point plus
    ``catch_up`` times its latest gain for each iteration left stays below ``target``, the
    best finished run's.
    """
    resp = torch.nn.functional.one_hot(labels, model.num_components).to(x.dtype)
    params = _m_step(x, features, resp, model, prior_loc, None, reg_covar)
    ll, converged, abandoned, iterations = -math.inf, False, False, 0
    while iterations < max_iter:
        iterations += 1
        joint = joint_log_density(x, params, features)
        # log-sum-exp and softmax sharing one exp of the (N, K) array, in place
        top = joint.max(-1, keepdim=True).values
        unnormalized = joint.sub_(top).exp_()
        total = unnormalized.sum(-1, keepdim=True)
        previous_ll, ll = ll, (top + total.log()).mean().item()
        if not math.isfinite(ll):
            raise UserError(_SINGULAR.format(reg_covar=reg_covar))
        if ll + catch_up * (max_iter - iterations) * max(ll - previous_ll, 0.0) < target:
            abandoned = True
            break
        resp = unnormalized.div_(total)
        params = _m_step(x, features, resp, model, prior_loc, params, reg_covar)
        if abs(ll - previous_ll) < tol:
            converged = True
            break
    if not abandoned:  # ll describes the parameters before the last M-step: score the ones kept
        ll = torch.logsumexp(joint_log_density(x, params, features), -1).mean().item()
        if not math.isfinite(ll):
            raise UserError(_SINGULAR.format(reg_covar=reg_covar))
    return params, {"iterations": iterations, "converged": converged, "abandoned": abandoned,
                    "log_likelihood": ll}
