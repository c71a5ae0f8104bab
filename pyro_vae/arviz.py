"""ArviZ ``InferenceData`` for fitted models: the bridge to the Bayesian workflow.

One builder, :func:`inference_data`, puts numpy arrays into the groups ArviZ expects
(``posterior``, ``posterior_predictive``, ``log_likelihood``, ``observed_data``, ``prior``,
``prior_predictive``) with named dimensions; the model-specific functions draw those
arrays, with Pyro's :class:`~pyro.infer.Predictive` (vectorized over the draws by its
outer plate) wherever a draw is the model's or the guide's own: prior and prior
predictive, posterior predictive, guide draws.  What ``Predictive`` cannot draw is written
out, each place saying why.

``log_likelihood`` always holds the *marginal* log-likelihood of each observation, every
latent variable of that observation integrated out, so that ``az.loo`` estimates the
held-out density log p(x_i | x_-i) and ``az.compare`` ranks models as their test
log-likelihood does.  (The conditional log p(x_i | z_is), given the observation's own
latent draw, is what PSIS cannot use: leaving x_i out changes z_i's posterior completely,
hence Pareto k > 1 and a p_loo in the hundreds.)  Draw s of the group is a draw of the
*global* parameters only:

:func:`toy_inference_data`
    The uniform-scale toy model: log p(x_i | theta_s), exact (E1 closed form), for posterior
    draws of theta = (a, b, mu) (NUTS: its chains), or, for a point estimate (``mle``,
    ``svi``), for draws of the Gaussian approximation at the estimate
    (:func:`~pyro_vae.inference.uniform_scale.theta_draws_at`); an SVI fit adds its guide's
    draws of the N latent scales z.
:func:`gmm_inference_data`
    The Gaussian mixture from a Bayesian fit's (``vi`` or ``nuts``) relabelled draws;
    log p(x_i | theta_s) = logsumexp_j [log alpha_j + log N(x_i; mu_j, Sigma_j)].
:func:`vae_inference_data`
    A trained VAE, whose decoder is a point estimate: each draw holds an importance-sampled
    estimate of log p(x_i) (leave-one-block-out over the particles, so that p_loo ~ 0 and
    elpd_loo is the importance-sampled log p(x); the number of particles is in the group's
    attributes).

Every group's draws have dims (chain, draw, ...); per-observation arrays use the dim
``obs``, so ``az.loo`` / ``az.waic`` / ``az.compare`` work on the result, with no Pareto-k
warning where the draws are good.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import Predictive

from .elbos import importance_estimate
from .errors import UserError
from .files import atomic_path
from .guides.uniform_scale import SigmoidAffineTransform
from .inference.uniform_scale import theta_draws_at
from .models.gmm import MixtureParams
from .models.gmm_density import log_marginal, sample_mixture
from .models.uniform_scale import UniformScaleMarginal, marginal_model

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
    posterior_attrs: dict | None = None,
    log_likelihood_attrs: dict | None = None,
) -> az.InferenceData:
    """``az.from_dict`` on tensors: every posterior-like array is (chain, draw, ...).

    ``dims`` names the dims after (chain, draw) of each variable, ``log_likelihood``'s
    variables get ``["obs"]`` (one value per observation, what ``az.loo`` reads) whatever
    ``dims`` says of the observed variable of the same name.  ``attrs`` go to the whole
    InferenceData, ``posterior_attrs`` and ``log_likelihood_attrs`` to those groups (say
    there what a draw is and how the log-likelihood was computed).
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
        posterior_attrs=posterior_attrs,
    )
    # a separate call: the observed x may have (obs, dim) while its log-likelihood has (obs,)
    pointwise = az.from_dict(
        log_likelihood=_numpy(log_likelihood), dims={k: ["obs"] for k in log_likelihood},
        log_likelihood_attrs=log_likelihood_attrs,
    )
    idata.extend(pointwise)
    return idata


# ---------------------------------------------------------------------------- toy model


def _toy_predictive(x: torch.Tensor, **draws) -> dict[str, torch.Tensor]:
    """:func:`~pyro_vae.models.uniform_scale.marginal_model` on x (N,) by ``Predictive``, its
    observation ``x`` drawn (``uncondition``), vectorized over the draws; ``draws`` go to
    ``Predictive`` (``num_samples`` or ``posterior_samples``, ``return_sites``).  The values are
    (S,) for a, gap, mu and (S, N) for x."""
    predictive = Predictive(poutine.uncondition(marginal_model), parallel=True, **draws)
    # theta's sites, outside the data plate, come back padded to its dim: (S, 1)
    return {name: value if name == "x" else value.squeeze(-1)
            for name, value in predictive(x).items()}


def toy_prior_draws(x: torch.Tensor, num_draws: int) -> dict[str, torch.Tensor]:
    """Draws of the weak data-scaled prior of the NUTS routes and of its prior predictive.

    Returns ``a``, ``b``, ``mu`` (S,) and ``x`` (S, N), S = ``num_draws``: theta_s from
    :func:`~pyro_vae.models.uniform_scale.theta_prior` (the prior NUTS samples from) and N
    points from p(x | theta_s), one ``Predictive`` pass of the Bayesian model.
    """
    draws = _toy_predictive(x, num_samples=num_draws, return_sites=("a", "gap", "mu", "x"))
    return {"a": draws["a"], "b": draws["a"] + draws["gap"], "mu": draws["mu"],
            "x": draws["x"]}


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
    """InferenceData for the toy model on data x (N,), LOO-ready.

    ``log_likelihood`` ``x`` (C, S, N) is the exact marginal log p(x_i | theta_s) (E1 closed
    form, z integrated out) and ``posterior_predictive`` ``x`` (C, S, N) a draw of N points
    from p(x | theta_s), for the draws theta_s of ``posterior`` ``a``, ``b``, ``mu`` (C, S):

    * posterior draws (``theta_draws``, e.g. NUTS's C chains);
    * for a point estimate theta_hat (``model`` fitted by ``mle`` or ``svi``), C = 1 chain
      of S = ``num_draws`` draws of its Gaussian approximation N(u_hat, J^-1) in
      u = (log a, log(b - a), mu), J the empirical Fisher information
      (:func:`~pyro_vae.inference.uniform_scale.theta_draws_at`).  A point mass would make
      every draw's log-likelihood equal, which PSIS cannot weigh (Pareto k = inf), and would
      charge LOO nothing for the three fitted parameters; with these draws p_loo ~ 3, the
      price the NUTS export pays, so LOO compares point estimates and posteriors fairly.
      theta_hat itself is in the posterior's attributes (``a_hat``, ``b_hat``, ``mu_hat``).

    With the SVI fit's ``guide``, ``posterior`` also holds ``z`` (1, S, N): the guide's
    logit-normal v_is ~ N(loc(x_i), scale(x_i)) at theta_hat, put on each draw's support,
    z_is = a_s + (b_s - a_s) sigmoid(v_is), so that a_s < z_is < b_s within every draw.

    Parameters
    ----------
    theta_draws : dict of (chain, draw) tensors "a", "b", "mu", optional
        Posterior draws of theta (e.g. NUTS).
    model, guide : optional
        Instead of ``theta_draws``: a fitted :class:`~pyro_vae.models.uniform_scale.UniformScale`
        (a point estimate) and, optionally, its amortized guide q(z | x).
    num_draws : int
        S for a point estimate (200: enough for PSIS's Pareto fit, whose tail is 20% of S).
    num_prior_draws : int
        Draws of the prior and prior predictive groups.
    seed : int
        Seeds every random draw.
    """
    pyro.set_rng_seed(seed)
    n = x.shape[0]
    dims = {"x": ["obs"]}
    if theta_draws is not None:
        posterior = {k: theta_draws[k] for k in ("a", "b", "mu")}
        posterior_attrs = {"theta": "posterior draws"}
    elif model is not None:
        draws = theta_draws_at(x, model, num_draws)  # autograd: the per-point scores
        posterior = {k: v[None] for k, v in draws.items()}
        posterior_attrs = {
            "theta": "N(u_hat, J^-1) at the point estimate, u = (log a, log(b - a), mu), "
                     "J = sum_i g_i g_i^T the empirical Fisher information",
            **{f"{k}_hat": v for k, v in model.theta().items()}}
        if guide is not None:
            # not Predictive(guide): its z lie in (a_hat, b_hat), and these are q's
            # unconstrained draws put on each theta draw's own support instead
            with torch.no_grad():
                loc, scale = guide.unconstrained(x)  # (N,) each, at theta_hat
                v = dist.Normal(loc, scale).sample((num_draws,))  # (S, N)
                support = SigmoidAffineTransform(draws["a"][:, None], draws["b"][:, None])
                posterior["z"] = support(v)[None]
            dims["z"] = ["obs"]
    else:
        raise ValueError("give theta_draws, or a fitted model (and its guide)")
    with torch.no_grad():  # the exact marginal in closed form: nothing to sample
        log_lik = _toy_marginal(posterior, n).log_prob(x)  # (chain, draw, N)
    chains = posterior["a"].shape
    theta = {"a": posterior["a"].flatten(), "gap": (posterior["b"] - posterior["a"]).flatten(),
             "mu": posterior["mu"].flatten()}
    predictive = _toy_predictive(x, posterior_samples=theta, return_sites=("x",))["x"]
    prior = toy_prior_draws(x, num_prior_draws)
    return inference_data(
        posterior=posterior,
        log_likelihood={"x": log_lik},
        posterior_predictive={"x": predictive.reshape(*chains, n)},
        observed_data={"x": x},
        prior={k: prior[k][None] for k in ("a", "b", "mu")},
        prior_predictive={"x": prior["x"][None]},
        dims=dims,
        attrs={"model": "uniform_scale"},
        posterior_attrs=posterior_attrs,
        log_likelihood_attrs={"x": "exact marginal log p(x_i | theta_s), z integrated out "
                                   "(E1 closed form)"},
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

    # not Predictive: the model picks each point's component by indexing the components'
    # leading dim (locs[z]), which an outer plate of draws would make the draws' dim, so it
    # does not vectorize (parallel=True); run draw by draw (parallel=False) it would gather
    # an (N, D, D) Cholesky stack per draw, which sample_mixture's loop over K avoids
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
    with torch.no_grad():  # the model's own prior sites, drawn as it draws them
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
    model, guide, x: torch.Tensor, *, num_draws: int = 200, num_particles: int = 1000,
    num_prior_draws: int = 20, seed: int = 0,
) -> az.InferenceData:
    """InferenceData for a trained VAE (:class:`~pyro_vae.models.vae.VAE`) on images x (N, D).

    Groups, with dims ``obs`` (N), ``latent`` (L) and ``pixel`` (D):
    posterior ``z`` (1, S, N, L) from q(z | x_i); log_likelihood ``x`` (1, S, N), estimates
    of the marginal log p(x_i) (below); posterior_predictive ``x`` (1, S, N, D), a draw of
    p(x | z_is) per latent draw (reconstructions); prior ``z`` (1, S0, N, L) from p(z) and
    prior_predictive ``x`` (1, S0, N, D) decoded from them; observed_data ``x`` (N, D).

    The log-likelihood.  The decoder's weights theta_hat are a point estimate, so nothing
    global varies over draws and the quantity LOO estimates is log p(x_i | theta_hat), z_i
    integrated out: on test images, the held-out density (pay no price for the weights).
    It is estimated by importance sampling (:func:`~pyro_vae.elbos.importance_estimate`),
    w_ij = p(x_i, z_ij) / q(z_ij | x_i), z_ij ~ q(z | x_i).  Draw s holds a K-particle
    estimate (K = ``num_particles``) made of K - k particles shared by all draws and k =
    max(1, K // S) of its own (at most K - 1):

        log_lik[s, i] = log( (sum_{j in shared} w_ij + sum_{j in own(s)} w_ij) / K ).

    Each draw is an unbiased estimate of p(x_i), as good as
    ``importance_estimate(..., num_particles=K)``; the draws differ only by their own
    particles, a share k / K ~ 1 / S of each.  That Monte Carlo spread is all that
    varies over draws, and LOO would read it as posterior spread: p_loo ~ sum_i
    Var_s log_lik[s, i] and elpd_loo the log of the harmonic mean over draws (LOO's
    weights are 1 / p_hat), biased below the estimate by that much.  With shared particles
    both are O(1 / S^2) of a k-particle estimate's variance: p_loo ~ 0, as it must be with
    no posterior over the weights, and elpd_loo = sum_i log p(x_i) estimated with K
    particles.  (Independent K-particle estimates per draw cost S K particles and leave
    p_loo ~ sum_i Var log p_hat_K(x_i).)  The importance ratio 1 / p_hat_is is largest
    where the draw's own particles are poorest, and bounded by K / sum_shared w: PSIS sees
    a light tail.  S = 200 draws give its Pareto fit the tail (20% of S) it needs to stay
    below ArviZ's threshold 1 - 1 / log10(S).  K, k and the shared count are in the group's
    attributes.

    Raises ``ValueError`` for fewer than 2 particles (a draw needs shared and own ones).
    """
    if num_particles < 2:
        raise ValueError(f"num_particles: each draw needs shared and own particles (K >= 2), "
                         f"got {num_particles}")
    own = min(max(1, num_particles // num_draws), num_particles - 1)  # >= 1 shared
    shared = num_particles - own
    code, n = _code_site(model, x), x.shape[0]
    pyro.set_rng_seed(seed)
    z = Predictive(guide, num_samples=num_draws, return_sites=(code,), parallel=True)(x)[code]
    # model(None, n=N) generates: x drawn from p(x | z_is), z_is conditioned on the guide's
    predictive = Predictive(model, posterior_samples={code: z}, return_sites=("x",),
                            parallel=True)(None, n=n)["x"]  # (S, N, D)
    prior = Predictive(model, num_samples=num_prior_draws, return_sites=(code, "x"),
                       parallel=True)(None, n=n)  # (S0, N, L) and (S0, N, D)
    # not Predictive: each draw's estimate shares K - k particles with every other draw, a
    # correlation across draws that independent vectorized draws cannot have
    with torch.no_grad():
        def log_sum(k: int) -> torch.Tensor:  # log sum_j w_ij over k new particles, (N,)
            return importance_estimate(model, guide, x, k).log_likelihood.double() + math.log(k)

        common = log_sum(shared)
        log_lik = torch.stack([torch.logaddexp(common, log_sum(own)) for _ in range(num_draws)])
        log_lik -= math.log(num_particles)  # (S, N)
    return inference_data(
        posterior={"z": z[None]},
        log_likelihood={"x": log_lik[None]},
        posterior_predictive={"x": predictive[None]},
        observed_data={"x": x},
        prior={"z": prior[code][None]},
        prior_predictive={"x": prior["x"][None]},
        dims={"z": ["obs", "latent"], "x": ["obs", "pixel"]},
        attrs={"model": "vae"},
        log_likelihood_attrs={
            "x": "importance-sampled log p(x_i), K particles per draw: shared ones and the "
                 "draw's own",
            "num_particles": num_particles, "shared_particles": shared,
            "own_particles_per_draw": own},
    )


def _code_site(model, x: torch.Tensor) -> str:
    """The name of the latent site the decoder reads: the model's last latent site (``z``;
    ``z1`` in the two-layer VAE, which draws z2 and then z1 | z2), from one traced row of x."""
    with torch.no_grad():
        trace = poutine.trace(model).get_trace(x[:1])
    return [name for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site["is_observed"]][-1]


def save_inference_data(idata: az.InferenceData, path: str | Path) -> Path:
    """Write ``idata`` to NetCDF (``.nc``) at ``path``, creating its folder; whole or not at
    all (:func:`~pyro_vae.files.atomic_path`)."""
    path = Path(path)
    if path.suffix != ".nc":
        raise UserError(f"--idata {path}: give a NetCDF file name ending in .nc")
    with atomic_path(path) as tmp:
        idata.to_netcdf(str(tmp))
    return path
