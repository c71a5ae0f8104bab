"""The Gaussian mixture's own terms in closed form, and sampling from it without a Pyro trace.

With theta = (alpha, mu, Sigma) a value of the global sites (:class:`MixtureParams`)::

    log N(x_i; mu_j, Sigma_j) = -(D log 2 pi + log det Sigma_j + ||(x_i - mu_j) U_j||^2) / 2
    log p(x_i | theta)        = logsumexp_j [log alpha_j + log N(x_i; mu_j, Sigma_j)]
    p(z_i = j | x_i, theta)   = alpha_j N(x_i; mu_j, Sigma_j) / p(x_i | theta)
    log p(x, theta)           = sum_i log p(x_i | theta) + log p(theta)

where Sigma_j^{-1} = U_j U_j^T (U_j upper triangular).  These are the numbers the Pyro model
of :mod:`pyro_vae.models.gmm` gives with the assignment z enumerated (``tests/test_gmm.py``
checks them against ``TraceEnum_ELBO`` and scipy), written as matrix products so that no
(N, K, D) tensor is formed: EM, the NUTS potential, scores and the ArviZ export use them.
"""

from __future__ import annotations

import math

import pyro
import torch

from .gmm import GaussianMixtureModel, MixtureParams

__all__ = [
    "BLOCK_ELEMENTS",
    "DTYPE",
    "component_log_density",
    "diag_features",
    "joint_log_density",
    "log_joint",
    "log_marginal",
    "precision_cholesky",
    "random_mixture",
    "responsibilities",
    "row_blocks",
    "sample_mixture",
]

DTYPE = torch.float64  # EM's log-sum-exp of K large negative numbers wants the precision
LOG_2PI = math.log(2 * math.pi)

# Row blocks keep every per-iteration temporary of the full-covariance E- and M-steps at about
# this many elements (2 MiB in float64): blocks that small are recycled by malloc, whereas a
# fresh (N, D) array per component and iteration comes from the kernel page by page (page
# faults took half the time of large full-covariance fits: benchmarks/NOTES.md)
BLOCK_ELEMENTS = 1 << 18


def row_blocks(x: torch.Tensor, width: int) -> tuple[torch.Tensor, ...]:
    """x (N, ...) split into row blocks of about ``BLOCK_ELEMENTS / width`` rows (views)."""
    return x.split(max(1, BLOCK_ELEMENTS // width))


def precision_cholesky(params: MixtureParams) -> torch.Tensor:
    """(K, D, D) upper-triangular U with Sigma^{-1} = U U^T (so (x - mu) U is whitened).

    U = L^{-T} for Sigma = L L^T, L = ``params.scale_tril()``.
    """
    tril = params.scale_tril()
    eye = torch.eye(params.dim, dtype=tril.dtype).expand_as(tril)
    return torch.linalg.solve_triangular(tril, eye, upper=False).transpose(-1, -2)


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
        for block in row_blocks(x, k * d)
    ])


def diag_features(x: torch.Tensor) -> torch.Tensor:
    """[x * x, x]: (N, D) -> (N, 2D).

    One matrix product with it gives every diagonal quadratic form
    sum_d (x_d - mu_d)^2 / s_d^2 = [x*x, x] . [1/s^2, -2 mu/s^2] + sum_d mu_d^2 / s_d^2,
    and with the responsibilities both moments of the diagonal M-step; EM computes it once.
    """
    return torch.cat([x * x, x], dim=-1)


def component_log_density(
    x: torch.Tensor, params: MixtureParams, features: torch.Tensor | None = None
) -> torch.Tensor:
    """log N(x_i; mu_j, Sigma_j) for all i, j: (N, D) -> (N, K).

    The same numbers as ``model.component_distribution(params).log_prob(x[:, None])``,
    computed as matrix products: memory O(N K + N D) instead of O(N K D) (full covariances
    go through row blocks of bounded size).
    ``features`` (diagonal case only) is :func:`diag_features` of x, precomputed by EM.
    """
    d = params.dim
    if params.chol_corr is None:
        features = diag_features(x) if features is None else features
        precision = params.scales.pow(-2)  # (K, D)
        weights = torch.cat([precision, -2 * params.locs * precision], dim=-1)  # (K, 2D)
        quad = features @ weights.T + (params.locs.pow(2) * precision).sum(-1)
        log_det = 2 * params.scales.log().sum(-1)
        return -0.5 * (d * LOG_2PI + log_det + quad)
    prec_chol = precision_cholesky(params)
    quad = _whitened_sq_norms(x, prec_chol, params.locs)
    log_det = -2 * torch.diagonal(prec_chol, dim1=-2, dim2=-1).log().sum(-1)
    return -0.5 * (d * LOG_2PI + log_det + quad)


def joint_log_density(
    x: torch.Tensor, params: MixtureParams, features: torch.Tensor | None = None
) -> torch.Tensor:
    """log p(x_i, z_i = j | theta) = log alpha_j + log N(x_i; mu_j, Sigma_j): (N, D) -> (N, K).

    ``features`` as for :func:`component_log_density`.
    """
    return params.weights.log() + component_log_density(x, params, features)


def log_marginal(x: torch.Tensor, params: MixtureParams) -> torch.Tensor:
    """log p(x_i | theta) = logsumexp_j [log alpha_j + log N(x_i; mu_j, Sigma_j)]: (N,).

    x is (N, D); the assignment z_i is summed out exactly, never sampled.
    """
    return torch.logsumexp(joint_log_density(x, params), dim=-1)


def responsibilities(x: torch.Tensor, params: MixtureParams) -> torch.Tensor:
    """p(z_i = j | x_i, theta): (N, D) -> (N, K), rows sum to one (infer_discrete's closed form)."""
    return torch.softmax(joint_log_density(x, params), dim=-1)


def log_joint(model: GaussianMixtureModel, params: MixtureParams, x: torch.Tensor) -> torch.Tensor:
    """log p(x, theta) = sum_i log p(x_i | theta) + log p(theta): the MAP objective (scalar).

    Equal to ``-TraceEnum_ELBO`` with point-mass guides at ``params`` on the globals.
    """
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
    """Random ground-truth parameters (float64) for simulations: K components in D dims.

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
