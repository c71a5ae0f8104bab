"""ArviZ ``InferenceData`` for fitted models: the bridge to the Bayesian workflow.

One builder, :func:`inference_data`, puts numpy arrays into the groups ArviZ expects
(``posterior``, ``posterior_predictive``, ``log_likelihood``, ``observed_data``, ``prior``,
``prior_predictive``) with named dimensions; the model-specific functions draw those arrays:

:func:`toy_inference_data`
    The uniform-scale toy model from posterior draws of theta = (a, b, mu) (NUTS, or any
    other sampler), or from an SVI fit's amortized guide (draws of the N latent scales z at
    the fitted theta).  ``log_likelihood`` is the exact marginal log p(x_i | theta_s) (E1
    closed form) for theta draws, and log p(x_i | z_is, theta) for guide draws.
:func:`gmm_inference_data`
    The Gaussian mixture from a Bayesian fit's (``vi`` or ``nuts``) relabelled draws;
    ``log_likelihood`` is the marginal logsumexp_j [log alpha_j + log N(x_i; mu_j, Sigma_j)].
:func:`vae_inference_data`
    A trained VAE: draws of each image's latent z from the amortized guide q(z | x), with
    ``log_likelihood`` log p(x_i | z_is) (conditional on the image's own z, so LOO on it
    measures reconstruction, not held-out density: that is the importance-sampled log p(x)).

Every group's draws have dims (chain, draw, ...); per-observation arrays use the dim
``obs``, so ``az.loo`` / ``az.waic`` / ``az.compare`` work on the result.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from .errors import UserError
from .models.gmm import MixtureParams
from .models.gmm_density import log_marginal, sample_mixture
from .models.uniform_scale import UniformScaleMarginal, theta_prior

with warnings.catch_warnings():
    # arviz 0.2x announces its 1.0 refactor on import; nothing here to act on
    warnings.filterwarnings("ignore", message=r"\s*ArviZ is undergoing", category=FutureWarning)
    import arviz as az

__all__ = [
    "inference_data",
    "toy_prior_draws",
    "toy_inference_data",
    "gmm_inference_data",
    "vae_inference_data",
    "save_inference_data",
]

Arrays = dict[str, np.ndarray]


def _numpy(tree: dict[str, torch.Tensor] | None) -> Arrays | None:
    if tree is None:
        return None
    return {k: v.detach().cpu().numpy() for k, v in tree.items()}


def inference_data(
    *,
    posterior: dict[str, torch.Tensor],
    log_likelihood: dict[str, torch.Tensor],
    observed_data: dict[str, torch.Tensor],
    posterior_predictive: dict[str, torch.Tensor] | None = None,
    prior: dict[str, torch.Tensor] | None = None,
    prior_predictive: dict[str, torch.Tensor] | None = None,
    dims: dict[str, list[str]] | None = None,
    coords: dict[str, np.ndarray] | None = None,
    attrs: dict | None = None,
) -> az.InferenceData:
    """``az.from_dict`` on tensors: every posterior-like array is (chain, draw, ...).

    ``dims`` names the dims after (chain, draw) of each variable, ``log_likelihood``'s
    variables get ``["obs"]`` (one value per observation, what ``az.loo`` reads) whatever
    ``dims`` says of the observed variable of the same name.
    """
    idata = az.from_dict(
        posterior=_numpy(posterior),
        posterior_predictive=_numpy(posterior_predictive),
        observed_data=_numpy(observed_data),
        prior=_numpy(prior),
        prior_predictive=_numpy(prior_predictive),
        dims=dims,
        coords=coords,
        attrs=attrs or {},
    )
    # a separate call: the observed x may have (obs, dim) while its log-likelihood has (obs,)
    pointwise = az.from_dict(
        log_likelihood=_numpy(log_likelihood), dims={k: ["obs"] for k in log_likelihood}
    )
    idata.extend(pointwise)
    return idata


# ---------------------------------------------------------------------------- toy model


def toy_prior_draws(x: torch.Tensor, num_draws: int) -> dict[str, torch.Tensor]:
    """(num_draws,) draws of a, b, mu from the weak data-scaled prior of the NUTS routes."""
    with pyro.plate("draws", num_draws, dim=-1), torch.no_grad():
        a, b, mu = theta_prior(x)  # the same prior NUTS samples from
    return {"a": a, "b": b, "mu": mu}


def _toy_marginal(theta: dict[str, torch.Tensor], num_points: int):
    """The exact marginal p(x | theta) for draws of theta of shape S, batch shape S + (N,)."""
    a, b, mu = (theta[k][..., None] for k in ("a", "b", "mu"))
    shape = a.shape[:-1] + (num_points,)
    return UniformScaleMarginal(a, b, mu, validate_args=False).expand(shape)


def toy_inference_data(
    x: torch.Tensor,
    *,
    theta_draws: dict[str, torch.Tensor] | None = None,
    model=None,
    guide=None,
    num_draws: int = 200,
    num_prior_draws: int = 200,
    seed: int = 0,
) -> az.InferenceData:
    """InferenceData for the toy model on data x (N,).

    Parameters
    ----------
    theta_draws : dict of (chain, draw) tensors "a", "b", "mu", optional
        Posterior draws of theta (e.g. NUTS).
    model, guide : optional
        Instead of ``theta_draws``: a fitted :class:`~pyro_vae.models.uniform_scale.UniformScale`
        and its amortized guide; ``num_draws`` draws of z (N,) from q(z | x), theta fixed.
    """
    pyro.set_rng_seed(seed)
    n = x.shape[0]
    with torch.no_grad():
        if theta_draws is not None:
            posterior = {k: theta_draws[k] for k in ("a", "b", "mu")}
            marginal = _toy_marginal(posterior, n)
            log_lik = marginal.log_prob(x)  # (chain, draw, N)
            predictive = marginal.sample()
            dims = {"x": ["obs"]}
        elif model is not None and guide is not None:
            with pyro.plate("particles", num_draws, dim=-2):
                z = guide(x)  # (S, N)
            z = z[None]
            posterior = {"z": z}
            likelihood = dist.Normal(model.mu, z)
            log_lik = likelihood.log_prob(x)
            predictive = likelihood.sample()
            dims = {"x": ["obs"], "z": ["obs"]}
        else:
            raise ValueError("give theta_draws, or a fitted model and its guide")
        prior = toy_prior_draws(x, num_prior_draws)
        prior_x = _toy_marginal(prior, n).sample()
    return inference_data(
        posterior=posterior,
        log_likelihood={"x": log_lik},
        posterior_predictive={"x": predictive},
        observed_data={"x": x},
        prior={k: v[None] for k, v in prior.items()},
        prior_predictive={"x": prior_x[None]},
        dims=dims,
        attrs={"model": "uniform_scale"},
    )


# ---------------------------------------------------------------------------- GMM


def gmm_inference_data(
    x: torch.Tensor, fitted, *, num_chains: int = 1, num_prior_draws: int = 100, seed: int = 0
) -> az.InferenceData:
    """InferenceData for a Bayesian mixture fit (:class:`~pyro_vae.inference.gmm.GMMFit`).

    ``fitted.samples`` holds S relabelled draws pooled over ``num_chains`` chains (NUTS
    pools its chains in order), reshaped here to (chain, draw).  The posterior predictive
    draws N points per draw from that draw's mixture.
    """
    if fitted.samples is None:
        raise UserError(
            f"the {fitted.inference!r} fit is a point estimate; InferenceData needs posterior "
            "draws (inference vi or nuts)"
        )
    samples = fitted.samples
    total = samples.weights.shape[0]
    if total % num_chains:
        raise ValueError(f"{total} draws do not split into {num_chains} chains")
    generator = torch.Generator().manual_seed(seed)
    x = x.to(samples.locs.dtype)

    def per_draw(params: MixtureParams):
        s = params.weights.shape[0]
        draws = [params.draw(i) for i in range(s)]
        log_lik = torch.stack([log_marginal(x, d) for d in draws])
        predictive = torch.stack([sample_mixture(d, x.shape[0], generator)[0] for d in draws])
        return log_lik, predictive

    def chains(t: torch.Tensor, c: int) -> torch.Tensor:
        return t.reshape(c, t.shape[0] // c, *t.shape[1:])

    log_lik, predictive = per_draw(samples)
    pyro.set_rng_seed(seed)
    with torch.no_grad():
        prior = {name: d.sample((num_prior_draws,))
                 for name, d in fitted.model.prior_distributions().items()}
    prior_params = MixtureParams.from_sites(prior)
    _, prior_x = per_draw(prior_params)
    posterior = {k: chains(v, num_chains) for k, v in samples.sites().items()}
    dims = {"weights": ["component"], "locs": ["component", "dim"],
            "scales": ["component", "dim"], "chol_corr": ["component", "dim", "dim_"],
            "x": ["obs", "dim"]}
    return inference_data(
        posterior=posterior,
        log_likelihood={"x": chains(log_lik, num_chains)},
        posterior_predictive={"x": chains(predictive, num_chains)},
        observed_data={"x": x},
        prior={k: v[None] for k, v in prior.items()},
        prior_predictive={"x": prior_x[None]},
        dims=dims,
        attrs={"model": "gmm", "inference": fitted.inference},
    )


# ---------------------------------------------------------------------------- VAE


def vae_inference_data(
    model, guide, x: torch.Tensor, *, num_draws: int = 20, num_prior_draws: int = 20,
    seed: int = 0,
) -> az.InferenceData:
    """InferenceData for a trained VAE (:class:`~pyro_vae.models.vae.VAE`) on images x (N, D).

    Groups, with dims ``obs`` (N), ``latent`` (L) and ``pixel`` (D):
    posterior ``z`` (1, S, N, L) from q(z | x_i); log_likelihood ``x`` (1, S, N), the
    log p(x_i | z_is) summed over pixels; posterior_predictive ``x`` (1, S, N, D), a draw of
    p(x | z_is) per latent draw (reconstructions); prior ``z`` (1, S0, N, L) from p(z) and
    prior_predictive ``x`` (1, S0, N, D) decoded from them; observed_data ``x`` (N, D).
    """
    pyro.set_rng_seed(seed)
    with torch.no_grad():
        z = guide.posterior(x).sample((num_draws,))  # (S, N, L)
        likelihood = model.likelihood(model.decoder(z))
        prior_z = model.prior().sample((num_prior_draws, x.shape[0]))  # (S0, N, L)
        prior_x = model.likelihood(model.decoder(prior_z)).sample()
        log_lik = likelihood.log_prob(x)
        predictive = likelihood.sample()
    return inference_data(
        posterior={"z": z[None]},
        log_likelihood={"x": log_lik[None]},
        posterior_predictive={"x": predictive[None]},
        observed_data={"x": x},
        prior={"z": prior_z[None]},
        prior_predictive={"x": prior_x[None]},
        dims={"z": ["obs", "latent"], "x": ["obs", "pixel"]},
        attrs={"model": "vae"},
    )


def save_inference_data(idata: az.InferenceData, path: str | Path) -> Path:
    """Write ``idata`` to NetCDF (``.nc``) at ``path``, creating its folder."""
    path = Path(path)
    if path.suffix != ".nc":
        raise UserError(f"--idata {path}: give a NetCDF file name ending in .nc")
    path.parent.mkdir(parents=True, exist_ok=True)
    idata.to_netcdf(str(path))
    return path
