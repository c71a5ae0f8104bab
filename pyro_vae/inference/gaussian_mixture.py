"""A Gaussian mixture users can keep: scikit-learn's estimator interface on the project's EM.

:class:`GaussianMixture` fits by the ``map`` route of :mod:`pyro_vae.inference.gmm` (EM on
the Pyro model's own terms, :func:`~pyro_vae.inference.gmm_em.em`) and answers with the
closed forms of :mod:`pyro_vae.models.gmm_density`, for x (N, D) and theta = (alpha, mu,
Sigma)::

    score_samples(x)_i = log p(x_i | theta) = logsumexp_j [log alpha_j + log N(x_i; mu_j, Sigma_j)]
    predict_proba(x)_ij = p(z_i = j | x_i, theta)        predict(x)_i = argmax_j of that row
    bic(x) = -2 sum_i log p(x_i | theta) + P log N       aic(x) = -2 sum_i log p(x_i | theta) + 2 P

with P free parameters (:func:`~pyro_vae.inference.gmm.num_parameters`), the conventions of
``sklearn.mixture.GaussianMixture``, whose predictions and log-likelihoods it matches
(``tests/test_gaussian_mixture.py``, ``benchmarks/gmm_vs_sklearn.py``).  EM here finds the
posterior mode under weak data-informed priors, which sits within O(1/N) of scikit-learn's
maximum-likelihood fit.

:meth:`GaussianMixture.save` writes plain tensors and a small dict of plain values (no pickled
code), atomically; :meth:`GaussianMixture.load` reads them with ``torch.load(weights_only=True)``
and checks every field, so a tampered or foreign file is a :class:`~pyro_vae.errors.UserError`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..models.gmm import COVARIANCE_TYPES, MixtureParams
from ..models.gmm_density import joint_log_density, log_marginal, sample_mixture
from ..train.checkpoint import load_tensors, save_tensors
from .gmm import GMMFit, aic, bic, check_data, fit_gmm

__all__ = ["FORMAT", "FORMAT_VERSION", "GaussianMixture"]

FORMAT = "pyro-vae gaussian mixture"  # the file's "format" entry: what it is
FORMAT_VERSION = 1

# the constructor's arguments, as saved: name -> the one type a saved value may have
_SETTINGS = {"n_components": int, "covariance_type": str, "tol": float, "reg_covar": float,
             "max_iter": int, "n_init": int, "seed": int}
# what fitting found, as saved (None: the route has no such number, e.g. NUTS's iterations)
_FIT = {"inference": str, "converged": (bool, type(None)), "n_iter": (int, type(None)),
        "lower_bound": float}


class GaussianMixture:
    """K-component Gaussian mixture fitted by EM, with scikit-learn's interface.

    Parameters
    ----------
    n_components : int
        K >= 1.
    covariance_type : {"diag", "full"}
    tol : float
        EM stops when the mean log-likelihood per point changes by less than this.
    reg_covar : float
        Added to every variance (> 0) so that no component collapses onto a point.
    max_iter : int
        EM iterations per restart at most.
    n_init : int
        EM restarts from k-means++ starts; the best final log-likelihood wins.
    seed : int
        Every random number (k-means starts, :meth:`sample`) follows from it.

    Attributes
    ----------
    Set by :meth:`fit` (or :meth:`from_fit`, :meth:`load`):

    params_ : MixtureParams
        The fitted alpha (K,), mu (K, D), scales (K, D) and correlation factors, components
        ordered by the first coordinate of their means.
    weights_, means_, covariances_ : numpy arrays
        (K,), (K, D) and (K, D) variances (``diag``) or (K, D, D) matrices (``full``), as
        scikit-learn lays them out.
    n_features_in_ : int
    converged_, n_iter_ : bool, int (None for a fit saved from the vi or nuts route)
        The winning EM restart's.
    lower_bound_ : float
        Mean log-likelihood per training point at the fitted parameters.
    inference_ : str
        The route that fitted ``params_`` (``map`` for :meth:`fit`).
    """

    def __init__(self, n_components: int = 1, *, covariance_type: str = "diag",
                 tol: float = 1e-3, reg_covar: float = 1e-6, max_iter: int = 100,
                 n_init: int = 1, seed: int = 0):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.seed = seed
        self.params_: MixtureParams | None = None
        self._generator: torch.Generator | None = None  # sample()'s, made on first use

    def __repr__(self) -> str:
        settings = ", ".join(f"{name}={getattr(self, name)!r}" for name in _SETTINGS)
        return f"GaussianMixture({settings})"

    # ------------------------------------------------------------------------ fitting

    def fit(self, X, y=None) -> GaussianMixture:
        """Fit to X (N, D) by EM (``y`` is ignored, as in scikit-learn); returns ``self``."""
        x = check_data(X, "X")
        fitted = fit_gmm(x, self.n_components, self.covariance_type, "map", seed=self.seed,
                         restarts=self.n_init, tol=self.tol, max_iter=self.max_iter,
                         reg_covar=self.reg_covar)
        self._take(fitted, x)
        return self

    def fit_predict(self, X, y=None) -> np.ndarray:
        """:meth:`fit`, then :meth:`predict` on the same X: labels (N,)."""
        return self.fit(X).predict(X)

    @classmethod
    def from_fit(cls, fitted: GMMFit, x: torch.Tensor, **settings: Any) -> GaussianMixture:
        """The estimator holding a fit of any route (its point estimate) to x (N, D).

        ``settings`` are the constructor's other arguments the fit used (``n_init``,
        ``reg_covar``, ``seed``...); K and the covariance type are the fit's.
        """
        mixture = cls(fitted.model.num_components, covariance_type=fitted.model.covariance,
                      **settings)
        mixture._take(fitted, check_data(x))
        return mixture

    def _take(self, fitted: GMMFit, x: torch.Tensor) -> None:
        """Keep a fit's point estimate and what is known of how it was found."""
        self.params_ = fitted.params
        self.inference_ = fitted.inference
        self.n_features_in_ = fitted.model.dim
        if "winner" in fitted.info:  # EM's restarts: the winner scored its final parameters
            winner = fitted.info["restarts"][fitted.info["winner"]]
            self.converged_, self.n_iter_ = winner["converged"], winner["iterations"]
            self.lower_bound_ = winner["log_likelihood"]
        else:
            self.converged_ = self.n_iter_ = None
            self.lower_bound_ = log_marginal(x, self.params_).mean().item()

    # ------------------------------------------------------------------------ the fitted mixture

    def _fitted(self) -> MixtureParams:
        if self.params_ is None:
            raise UserError("this GaussianMixture is not fitted yet; call fit(X) or load(path)")
        return self.params_

    def _data(self, X) -> torch.Tensor:
        """X as (N, D) float64, checked, with the D the mixture was fitted on."""
        params = self._fitted()
        x = check_data(X, "X")
        if x.shape[1] != params.dim:
            raise UserError(f"X has D={x.shape[1]} features but the mixture was fitted on "
                            f"D={params.dim}")
        return x

    @property
    def weights_(self) -> np.ndarray:
        return self._fitted().weights.numpy()

    @property
    def means_(self) -> np.ndarray:
        return self._fitted().locs.numpy()

    @property
    def covariances_(self) -> np.ndarray:
        params = self._fitted()
        if self.covariance_type == "diag":
            return params.scales.pow(2).numpy()
        return params.covariances().numpy()

    def score_samples(self, X) -> np.ndarray:
        """log p(x_i | theta) for each row of X (N, D): (N,) nats."""
        return log_marginal(self._data(X), self._fitted()).numpy()

    def score(self, X, y=None) -> float:
        """Mean log-likelihood per point of X (N, D), nats (higher is better)."""
        return float(self.score_samples(X).mean())

    def predict_proba(self, X) -> np.ndarray:
        """Responsibilities p(z_i = j | x_i, theta): (N, K), rows summing to one."""
        return torch.softmax(joint_log_density(self._data(X), self._fitted()), -1).numpy()

    def predict(self, X) -> np.ndarray:
        """The most probable component of each row of X (N, D): (N,) int64 labels."""
        return joint_log_density(self._data(X), self._fitted()).argmax(-1).numpy()

    def sample(self, n_samples: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(X (n, D), labels (n,)): index j ~ alpha, then x ~ N(mu_j, Sigma_j).

        Draws follow ``seed``; successive calls continue the same stream (different draws).
        """
        if not isinstance(n_samples, int) or n_samples < 1:
            raise UserError(f"n_samples must be a positive integer, got {n_samples!r}")
        params = self._fitted()
        if self._generator is None:
            self._generator = torch.Generator().manual_seed(self.seed)
        x, z = sample_mixture(params, n_samples, self._generator)
        return x.numpy(), z.numpy()

    def _total(self, X) -> tuple[float, int]:
        x = self._data(X)
        return log_marginal(x, self._fitted()).sum().item(), x.shape[0]

    def bic(self, X) -> float:
        """Bayesian information criterion on X (N, D): -2 log L + P log N (lower is better)."""
        total, n = self._total(X)
        return bic(total, n, self.n_components, self.n_features_in_, self.covariance_type)

    def aic(self, X) -> float:
        """Akaike information criterion on X (N, D): -2 log L + 2 P (lower is better)."""
        total, _ = self._total(X)
        return aic(total, self.n_components, self.n_features_in_, self.covariance_type)

    # ------------------------------------------------------------------------ files

    def save(self, path: str | Path) -> Path:
        """Write the fitted mixture to ``path`` atomically: the old file or the new one is
        there at any moment, never half of one.  The path."""
        params = self._fitted()
        payload = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "settings": {name: kind(getattr(self, name)) for name, kind in _SETTINGS.items()},
            "fit": {"inference": self.inference_, "converged": self.converged_,
                    "n_iter": self.n_iter_, "lower_bound": float(self.lower_bound_)},
            # copies in float64: a view would save the whole storage it looks into
            **{name: value.detach().to(torch.float64).clone()
               for name, value in params.sites().items()},
        }
        return save_tensors(path, payload)  # a mixture is refitted in seconds: no .prev copy

    @classmethod
    def load(cls, path: str | Path) -> GaussianMixture:
        """The mixture :meth:`save` wrote; ``UserError`` for any other file."""
        payload = load_tensors(path, "mixture", "give the mixture.pt that gmm --out wrote")
        try:
            params, settings, fit = _checked(payload)
        except _Invalid as exc:
            raise UserError(f"{path} is not a valid pyro-vae mixture ({exc})") from None
        mixture = cls(**settings)
        mixture.params_, mixture.n_features_in_ = params, params.dim
        mixture.inference_, mixture.converged_ = fit["inference"], fit["converged"]
        mixture.n_iter_, mixture.lower_bound_ = fit["n_iter"], fit["lower_bound"]
        return mixture


class _Invalid(Exception):
    """A saved mixture's field is not what :meth:`GaussianMixture.save` writes."""


def _require(condition: bool, reason: str) -> None:
    if not condition:
        raise _Invalid(reason)


def _entries(payload: dict, key: str, kinds: dict[str, Any]) -> dict[str, Any]:
    """``payload[key]``: a dict with exactly the names of ``kinds``, each of its type."""
    entries = payload.get(key)
    _require(isinstance(entries, dict) and set(entries) == set(kinds),
             f"{key!r} must hold exactly {', '.join(kinds)}")
    for name, kind in kinds.items():
        # type(), not isinstance(): True is an int to isinstance, and not a count here
        kinds_ok = kind if isinstance(kind, tuple) else (kind,)
        _require(type(entries[name]) in kinds_ok, f"{key}.{name} has type "
                 f"{type(entries[name]).__name__}")
    return entries


def _tensor(payload: dict, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    value = payload.get(name)
    _require(torch.is_tensor(value) and value.dtype == torch.float64
             and tuple(value.shape) == shape, f"{name!r} must be a float64 tensor of shape "
             f"{shape}")
    _require(bool(torch.isfinite(value).all()), f"{name!r} holds NaN or infinite values")
    return value


def _checked(payload: Any) -> tuple[MixtureParams, dict[str, Any], dict[str, Any]]:
    """(params, constructor settings, fit facts) of a saved mixture, every field checked."""
    _require(isinstance(payload, dict) and payload.get("format") == FORMAT,
             f"no 'format': {FORMAT!r} entry")
    _require(payload.get("format_version") == FORMAT_VERSION,
             f"format version {payload.get('format_version')!r}; this pyro-vae reads "
             f"{FORMAT_VERSION}")
    settings = _entries(payload, "settings", _SETTINGS)
    fit = _entries(payload, "fit", _FIT)
    k, covariance = settings["n_components"], settings["covariance_type"]
    _require(covariance in COVARIANCE_TYPES, f"unknown covariance_type {covariance!r}")
    _require(k >= 1 and settings["n_init"] >= 1 and settings["reg_covar"] > 0,
             "n_components and n_init must be >= 1 and reg_covar > 0")
    locs = payload.get("locs")
    _require(torch.is_tensor(locs) and locs.ndim == 2 and locs.shape[1] >= 1,
             "'locs' must be a (K, D) tensor")
    d = locs.shape[1]
    weights = _tensor(payload, "weights", (k,))
    locs = _tensor(payload, "locs", (k, d))
    scales = _tensor(payload, "scales", (k, d))
    _require(bool((weights >= 0).all()) and abs(weights.sum().item() - 1) < 1e-9,
             "'weights' must be probabilities summing to one")
    _require(bool((scales > 0).all()), "'scales' must be positive")
    chol = None
    correlated = covariance == "full" and d >= 2  # the model's chol_corr site
    expected = {"format", "format_version", "settings", "fit", "weights", "locs", "scales"}
    if correlated:
        expected.add("chol_corr")
        chol = _tensor(payload, "chol_corr", (k, d, d))
        # Cholesky factors of correlation matrices: lower triangular, positive diagonal,
        # unit rows (so L L^T has ones on its diagonal)
        _require(torch.equal(chol, chol.tril()) and bool((chol.diagonal(0, -2, -1) > 0).all())
                 and bool(((chol.pow(2).sum(-1) - 1).abs() < 1e-9).all()),
                 "'chol_corr' must hold Cholesky factors of correlation matrices")
    _require(set(payload) == expected, f"entries {sorted(set(payload) ^ expected)} "
             "unexpected or missing")
    _require(math.isfinite(fit["lower_bound"]), "fit.lower_bound is not finite")
    return MixtureParams(weights, locs, scales, chol), settings, fit
