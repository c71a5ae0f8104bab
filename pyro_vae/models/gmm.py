"""The Gaussian mixture p(x) = sum_j alpha_j N(x; mu_j, Sigma_j) as a Pyro model.

Generative story (the lecture's, read top to bottom in :meth:`GaussianMixtureModel.__call__`)::

    alpha          ~ Dirichlet(c 1_K)
    mu_j           ~ Normal(m0, tau0)                     j = 1..K   (D-vectors)
    sigma_j        ~ LogNormal(log s0, v0)                 (per coordinate: the scales)
    L_j            ~ LKJCholesky(D, eta)                   only for covariance="full"
    Sigma_j        = diag(sigma_j) L_j L_j^T diag(sigma_j) (diag(sigma_j)^2 for "diag")
    z_i | alpha    ~ Categorical(alpha)                    i = 1..N, enumerated, never sampled
    x_i | z_i = j  ~ N(mu_j, Sigma_j)

The hyperparameters are weak and read off the data (:meth:`GMMPriors.from_data`) so that the
posterior mode sits within O(1/N) of the maximum-likelihood fit that scikit-learn's EM finds.
The assignment site carries ``infer={"enumerate": "parallel"}`` (what ``config_enumerate``
sets), so ``TraceEnum_ELBO(max_plate_nesting=1)`` and ``NUTS`` sum it out exactly.

The same terms in closed form (the component densities, the marginal with z summed out, the
responsibilities, the log joint) and sampling without a Pyro trace are in
:mod:`pyro_vae.models.gmm_density`; the fitting routes in :mod:`pyro_vae.inference.gmm`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch

__all__ = [
    "COVARIANCE_TYPES",
    "GLOBAL_SITES",
    "GMMPriors",
    "GaussianMixtureModel",
    "MixtureParams",
]

COVARIANCE_TYPES = ("diag", "full")
#: the model's global latent sites; the assignment site is ``"assignment"``, the data ``"obs"``
GLOBAL_SITES = ("weights", "locs", "scales", "chol_corr")


@dataclass(frozen=True)
class GMMPriors:
    """Hyperparameters of the priors (see the module docstring for their roles).

    ``loc`` and ``scale_median`` are (D,) tensors; the rest are floats.
    """

    loc: torch.Tensor
    loc_scale: float
    scale_median: torch.Tensor
    scale_log_sd: float
    concentration: float = 1.0
    lkj_concentration: float = 1.0

    @classmethod
    def from_data(cls, x: torch.Tensor) -> GMMPriors:
        """Weak data-informed priors for x (N, D).

        Means are centred on the data mean with a scale ten times the data's spread;
        each scale has its median at the data's overall standard deviation and a log-sd
        of 2 (a factor e^2 ~ 7 either way is one prior sd).  ``concentration = 1`` makes
        the Dirichlet flat on the simplex, so the MAP weights are the ML weights.
        """
        spread = x.std(0).pow(2).mean().sqrt() if x.shape[0] > 1 else x.new_tensor(1.0)
        spread = torch.clamp(spread, min=1e-6)  # constant data: keep the prior proper
        return cls(
            loc=x.mean(0),
            loc_scale=10.0 * float(spread),
            scale_median=spread.expand(x.shape[1]).clone(),
            scale_log_sd=2.0,
        )


@dataclass(frozen=True)
class MixtureParams:
    """One value of the global sites.

    Attributes
    ----------
    weights : (K,) tensor, on the simplex.
    locs : (K, D) tensor.
    scales : (K, D) tensor, positive: the coordinate standard deviations.
    chol_corr : (K, D, D) tensor or None
        Cholesky factors of the correlation matrices (``None`` for diagonal covariance).
    """

    weights: torch.Tensor
    locs: torch.Tensor
    scales: torch.Tensor
    chol_corr: torch.Tensor | None = None

    @property
    def num_components(self) -> int:
        """K, the number of components."""
        return self.weights.shape[-1]

    @property
    def dim(self) -> int:
        """D, the dimension of the data."""
        return self.locs.shape[-1]

    def scale_tril(self) -> torch.Tensor:
        """(K, D, D) Cholesky factor of each Sigma_j = diag(s) L L^T diag(s)."""
        if self.chol_corr is None:
            return torch.diag_embed(self.scales)
        return self.scales.unsqueeze(-1) * self.chol_corr

    def covariances(self) -> torch.Tensor:
        """(K, D, D) covariance matrices."""
        tril = self.scale_tril()
        return tril @ tril.transpose(-1, -2)

    def sites(self) -> dict[str, torch.Tensor]:
        """Values keyed by the model's site names (for conditioning and ``init_to_value``)."""
        values = {"weights": self.weights, "locs": self.locs, "scales": self.scales}
        if self.chol_corr is not None:
            values["chol_corr"] = self.chol_corr
        return values

    def ordered(self) -> MixtureParams:
        """The same mixture(s) with components sorted by the first coordinate of their means.

        The likelihood is invariant under relabelling the components, so posterior draws
        mix over K! copies of every mode; summaries (means, r-hat) are only meaningful on a
        fixed labelling.  Works on batches: leading dims of every field are kept.
        """
        order = torch.argsort(self.locs[..., 0], dim=-1)
        def take(t, event_dims):  # gather along the component dim, left of event_dims
            index = order[(...,) + (None,) * event_dims]
            return torch.take_along_dim(t, index, dim=-1 - event_dims)

        chol = None if self.chol_corr is None else take(self.chol_corr, 2)
        return MixtureParams(take(self.weights, 0), take(self.locs, 1), take(self.scales, 1), chol)

    def draw(self, s: int) -> MixtureParams:
        """The s-th of a batch of draws: every field's leading (S,) dim indexed by ``s``.

        ``weights`` (S, K) -> (K,), ``locs`` and ``scales`` (S, K, D) -> (K, D),
        ``chol_corr`` (S, K, D, D) -> (K, D, D).
        """
        chol = None if self.chol_corr is None else self.chol_corr[s]
        return MixtureParams(self.weights[s], self.locs[s], self.scales[s], chol)

    def to(self, dtype: torch.dtype) -> MixtureParams:
        """The same parameters in ``dtype``."""
        chol = None if self.chol_corr is None else self.chol_corr.to(dtype)
        return MixtureParams(
            self.weights.to(dtype), self.locs.to(dtype), self.scales.to(dtype), chol
        )

    @classmethod
    def from_covariances(
        cls, weights: torch.Tensor, locs: torch.Tensor, covariances: torch.Tensor, full: bool
    ) -> MixtureParams:
        """Split (K, D, D) covariances into scales and correlation Cholesky factors."""
        scales = torch.diagonal(covariances, dim1=-2, dim2=-1).sqrt()
        if not full:
            return cls(weights, locs, scales)
        corr = covariances / (scales.unsqueeze(-1) * scales.unsqueeze(-2))
        return cls(weights, locs, scales, torch.linalg.cholesky(corr))

    @classmethod
    def from_sites(cls, values: dict[str, torch.Tensor]) -> MixtureParams:
        """Inverse of :meth:`sites` (extra keys are ignored; leading sample dims are kept)."""
        return cls(values["weights"], values["locs"], values["scales"], values.get("chol_corr"))


class GaussianMixtureModel:
    """Pyro model of a K-component, D-dimensional Gaussian mixture.

    Parameters
    ----------
    num_components : int
        K >= 1.
    dim : int
        D >= 1.
    covariance : {"diag", "full"}
        ``"full"`` adds an LKJ-distributed correlation per component (for D >= 2;
        with D = 1 the two types coincide and no correlation site is drawn).
    priors : GMMPriors

    Notes
    -----
    Called as ``model(x=None, *, n=None)`` like every model of the package: ``x`` is (B, D)
    (a subsample of ``n`` rows, the log-likelihood is scaled by n / B), ``x=None`` generates
    ``n`` points by drawing the index j from alpha and then x from component j.
    """

    def __init__(self, num_components: int, dim: int, covariance: str, priors: GMMPriors):
        if covariance not in COVARIANCE_TYPES:
            raise ValueError(
                f"unknown covariance {covariance!r}; choose one of: {', '.join(COVARIANCE_TYPES)}"
            )
        self.num_components = num_components
        self.dim = dim
        self.covariance = covariance
        self.priors = priors

    @property
    def has_correlations(self) -> bool:
        """Whether the model draws the ``chol_corr`` site (``full`` with D >= 2)."""
        return self.covariance == "full" and self.dim >= 2

    def prior_distributions(self) -> dict[str, dist.Distribution]:
        """Prior of each global site, batch shape (K,) for the per-component ones.

        The model samples exactly these, so :meth:`log_prior` and the model agree.
        """
        p, k, d = self.priors, self.num_components, self.dim
        loc = p.loc.expand(k, d)
        priors = {
            "weights": dist.Dirichlet(loc.new_full((k,), p.concentration)),
            "locs": dist.Normal(loc, p.loc_scale).to_event(1),
            "scales": dist.LogNormal(p.scale_median.log().expand(k, d), p.scale_log_sd).to_event(1),
        }
        if self.has_correlations:
            priors["chol_corr"] = dist.LKJCholesky(
                d, loc.new_tensor(p.lkj_concentration)
            ).expand([k])
        return priors

    def log_prior(self, params: MixtureParams) -> torch.Tensor:
        """log p(theta): scalar, the sum over sites and components."""
        values = params.sites()
        return sum(
            prior.log_prob(values[name]).sum() for name, prior in self.prior_distributions().items()
        )

    def component_distribution(self, params: MixtureParams) -> dist.Distribution:
        """N(mu_j, Sigma_j) with batch shape (K,) and event shape (D,)."""
        if params.chol_corr is None:
            return dist.Normal(params.locs, params.scales).to_event(1)
        return dist.MultivariateNormal(params.locs, scale_tril=params.scale_tril())

    def __call__(self, x: torch.Tensor | None = None, *, n: int | None = None) -> torch.Tensor:
        priors = self.prior_distributions()
        weights = pyro.sample("weights", priors["weights"])
        # components are independent a priori; a plate (not at the data plate's dim in the
        # same context) keeps the per-component sites' batch shape (K,)
        with pyro.plate("components", self.num_components, dim=-1):
            locs = pyro.sample("locs", priors["locs"])
            scales = pyro.sample("scales", priors["scales"])
            chol_corr = None
            if self.has_correlations:
                chol_corr = pyro.sample("chol_corr", priors["chol_corr"])
        n = x.shape[0] if n is None and x is not None else n
        if n is None:
            raise ValueError("give the data x or the number of points n to generate")
        batch = x.shape[0] if x is not None else n
        with pyro.plate("data", n, subsample_size=batch, dim=-1):
            z = pyro.sample(
                "assignment", dist.Categorical(weights), infer={"enumerate": "parallel"}
            )
            # under enumeration z is (K, 1) and indexes a (K, 1, D) stack of components
            chol_z = None if chol_corr is None else chol_corr[z]
            params = MixtureParams(weights, locs[z], scales[z], chol_z)
            return pyro.sample("obs", self.component_distribution(params), obs=x)
