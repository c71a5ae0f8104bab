"""The uniform-scale toy model end to end: data -> fit -> exact numbers -> metrics and figures.

    z ~ Uniform(a, b),  x | z ~ Normal(mu, z)

:func:`run_toy` takes a :class:`ToyRun` (where the data come from, the route's name from
:data:`pyro_vae.inference.uniform_scale.TOY_INFERENCES`, its budgets, the output paths)
and returns the metrics it also writes to ``out/metrics.json``; ``pyro-vae toy``
(:mod:`pyro_vae.cli.toy`) builds the run from its flags and prints the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
from torch import nn

from ..elbos import log_importance_weights
from ..errors import UserError
from ..guides.uniform_scale import LocalUniformScaleGuide, fit_local_guide
from ..inference.uniform_scale import ToyFit, ToyOptions, fit_svi, simulate, toy_inference
from ..lecture.elbo_identity import elbo_identity
from ..lecture.gradients import compare_gradient_estimators
from ..models.uniform_scale import UniformScale, log_marginal_quadrature
from ..rng import single_thread
from ..train import TrainingLog
from .runs import prepare_out, write_metrics

__all__ = ["Simulation", "ToyRun", "load_toy_data", "run_toy"]


@dataclass(frozen=True)
class Simulation:
    """N points drawn from the toy model at a known theta = (a, b, mu), 0 < a < b.

    The run then also reports the true theta's log-likelihood and draws it in the figure.
    """

    a: float
    b: float
    mu: float
    num_points: int


@dataclass
class ToyRun:
    """One ``pyro-vae toy`` run.

    Attributes
    ----------
    inference : str
        A route of :data:`~pyro_vae.inference.uniform_scale.TOY_INFERENCES`, or an ELBO's
        name (the ``svi`` route with that ELBO).
    data : Path or Simulation
        A .npy file of N points (:func:`load_toy_data`), or points drawn at a known theta
        with ``seed``.
    seed : int
        Every random number of the run follows from it.
    out : Path or None
        Folder for ``metrics.json`` and the three figures; ``None`` writes nothing.
    overwrite : bool
        Replace a run already in ``out``.
    idata : Path or None
        Where to write ArviZ InferenceData (NetCDF, ``.nc``): NUTS's posterior draws, or
        for ``mle`` and ``svi`` the Gaussian approximation at their point estimate
        (:func:`~pyro_vae.arviz.toy_inference_data`).
    options : ToyOptions
        The route's budgets.
    tensorboard : Path or None
        ``svi`` and the ELBOs' names: TensorBoard event files of the steps in this folder
        (the ELBO per point at every step, then the budgets as hparams with the final ELBO,
        log p(x) and ELBO of the guide).
    """

    inference: str
    data: Path | Simulation
    seed: int = 0
    out: Path | None = None
    overwrite: bool = False
    idata: Path | None = None
    options: ToyOptions = field(default_factory=ToyOptions)
    tensorboard: Path | None = None


def load_toy_data(path: str | Path) -> torch.Tensor:
    """A .npy file of N >= 2 finite numbers, shape (N,) or (N, 1) -> float64 tensor (N,).

    Raises :class:`UserError` for a missing or unreadable file, non-numbers, another shape,
    fewer than 2 points, NaN or infinity, or points that are all equal (no scale to fit).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--data {path}: no such file")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise UserError(f"--data {path} is not a readable .npy array ({exc})") from None
    if (not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.number)
            or np.iscomplexobj(array)):
        raise UserError(f"--data {path} must hold real numbers, got "
                        f"{getattr(array, 'dtype', '?')}")
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
    with np.errstate(over="ignore"):  # an overflow is the finding, not a warning
        squares = np.square(array, dtype=np.float64).sum()
    if not np.isfinite(squares):  # the fits use x^2
        raise UserError(f"--data {path} has values too large to square in float64 (largest "
                        f"|x| = {np.abs(array).max():.3g}); rescale it")
    return torch.as_tensor(array, dtype=torch.float64)


def _check(run: ToyRun) -> None:
    """The run's user errors, raised before any data is read or any fitting starts."""
    options = run.options
    for name in ("steps", "num_particles", "warmup", "samples", "chains"):
        if getattr(options, name) < 1:
            flag = name.replace("_", "-")
            raise UserError(f"--{flag} must be >= 1, got {getattr(options, name)}")
    if not options.lr > 0:
        raise UserError(f"--lr must be positive, got {options.lr}")


def _figure_guide(fitted: ToyFit, x: torch.Tensor, seed: int) -> tuple[nn.Module, torch.Tensor]:
    """The guide and points (41,) for the posterior and identity figures.

    The SVI route's own amortized guide on x; for routes without a guide, a per-point
    guide fitted at the fitted theta on a grid of x spanning the data.
    """
    grid = torch.linspace(*np.quantile(x.numpy(), [0.005, 0.995]), 41, dtype=torch.float64)
    if fitted.guide is not None:
        return fitted.guide, grid
    guide = LocalUniformScaleGuide(fitted.model, grid.shape[0])
    fit_local_guide(fitted.model, guide, grid, steps=400, seed=seed)
    return guide, grid


def _summarize(fitted: ToyFit, x: torch.Tensor, seed: int) -> dict[str, Any]:
    """theta, the exact log-likelihood two ways, the guide's ELBO, the fit's time and extras."""
    model = fitted.model
    metrics: dict[str, Any] = {**model.theta()}
    with torch.no_grad():
        metrics["log_likelihood"] = model.log_marginal(x).mean().item()
    # the same number by adaptive quadrature over z: shares no code with the E1 closed form
    metrics["log_likelihood_quadrature"] = float(
        log_marginal_quadrature(x.numpy(), metrics["a"], metrics["b"], metrics["mu"]).mean()
    )
    metrics["elbo"] = None
    if fitted.guide is not None:
        pyro.set_rng_seed(seed)
        # 100 particles per point: the mean over N points has negligible Monte Carlo error
        w = torch.cat([log_importance_weights(model, fitted.guide, chunk, 100)
                       for chunk in x.split(2000)], dim=1)
        metrics["elbo"] = w.mean().item()
        metrics["elbo_gap"] = metrics["log_likelihood"] - metrics["elbo"]
    metrics["seconds"] = fitted.seconds
    metrics.update(fitted.extra)
    return metrics


def run_toy(run: ToyRun) -> dict[str, Any]:
    """Data -> fit -> exact numbers -> metrics (and ``metrics.json``, figures, InferenceData).

    The metrics (nats per point; higher is better for both):

    ``a, b, mu``                   fitted theta (the posterior mean for NUTS)
    ``log_likelihood``             exact mean log p(x) at theta, E1 closed form
    ``log_likelihood_quadrature``  the same by adaptive quadrature over z
    ``elbo``, ``elbo_gap``         the guide's mean ELBO and log p(x) - ELBO (SVI only)
    ``seconds``                    wall time of the fit alone
    ``true_log_likelihood``        exact mean log p(x) at the true theta (simulated data)
    ``identity_max_abs_z``         largest |log p(x) - ELBO - KL| / s.e. on a grid of x
    ``mean_kl_on_grid``            mean KL(q(z|x) || p(z|x)) over that grid
    ``gradient_variance_ratio``    score-function / reparameterized ELBO-gradient variance
    plus route-specific standard errors (mle), chains, posterior sd, ESS, R-hat over chains
    and divergences (nuts), and the paths of the files written (``figures``, ``idata``).

    Raises :class:`UserError` for bad options or data, before any fitting.
    """
    _check(run)
    truth = None
    if isinstance(run.data, Simulation):
        sim = run.data
        truth = UniformScale(sim.a, sim.b, sim.mu)
        x = simulate(sim.a, sim.b, sim.mu, sim.num_points, seed=run.seed)
        source = f"simulated a={sim.a} b={sim.b} mu={sim.mu} N={sim.num_points} seed={run.seed}"
    else:
        x = load_toy_data(run.data)
        source = str(run.data)
    route, options = toy_inference(run.inference, run.options)
    if run.tensorboard is not None:
        if route is not fit_svi:
            raise UserError(f"--tensorboard logs SVI's steps: --inference {run.inference} has "
                            "none (give svi or an ELBO's name)")
        options = replace(options, log=TrainingLog(run.tensorboard))
    out = prepare_out(run.out, run.overwrite) if run.out is not None else None
    with single_thread():
        fitted = route(x, seed=run.seed, options=options)
        metrics = {"inference": run.inference, "data": source, "num_points": x.shape[0],
                   **_summarize(fitted, x, run.seed)}
        if truth is not None:
            with torch.no_grad():
                metrics["true_log_likelihood"] = truth.log_marginal(x).mean().item()
        guide, grid = _figure_guide(fitted, x, run.seed)
        pyro.set_rng_seed(run.seed)
        identity = elbo_identity(fitted.model, guide, grid)
        metrics["identity_max_abs_z"] = identity.z_scores.abs().max().item()
        metrics["mean_kl_on_grid"] = identity.kl.mean().item()
        pyro.set_rng_seed(run.seed)
        params = list(guide.parameters())
        sample = x[:100] if fitted.guide is not None else grid
        gradients = compare_gradient_estimators(fitted.model, guide, sample, params,
                                                num_repeats=100)
        metrics["gradient_variance_ratio"] = gradients.variance_ratio
        if options.log is not None:
            _log_hparams(options.log, run, options, metrics)
        if out is not None:
            metrics["figures"] = _save_figures(fitted, x, truth, guide, grid, identity, out)
        if run.idata is not None:
            metrics["idata"] = str(_write_idata(fitted, x, run.idata, run.seed))
        if out is not None:  # once, with everything: metrics.json and its report.html
            write_metrics(out, metrics)
    return metrics


def _log_hparams(log: TrainingLog, run: ToyRun, options: ToyOptions,
                 metrics: dict[str, Any]) -> None:
    """The SVI run's budgets as hparams with its final numbers (as in metrics.json), closed."""
    config = {"toy": {"inference": run.inference, "elbo": options.elbo, "seed": run.seed,
                      "steps": options.steps, "lr": options.lr,
                      "num_particles": options.num_particles}}
    log.hparams(config, {name: metrics[name] for name in
                         ("final_train_elbo", "elbo", "log_likelihood")})
    log.close()
    metrics["tensorboard"] = str(log.log_dir)


def _save_figures(fitted: ToyFit, x, truth, guide, grid, identity, out: Path) -> dict[str, str]:
    """fit.png, posterior.png and elbo_identity.png in ``out``: name -> path."""
    # matplotlib: imported only when figures are drawn
    from ..plots import uniform_scale as toy_plots

    return {
        "fit": str(toy_plots.save_toy_fit(x, fitted.model, out / "fit.png", truth)),
        "posterior": str(toy_plots.save_posteriors(fitted.model, guide, grid,
                                                   out / "posterior.png")),
        "elbo_identity": str(toy_plots.save_elbo_identity(identity, out / "elbo_identity.png")),
    }


def _write_idata(fitted: ToyFit, x: torch.Tensor, path: Path, seed: int) -> Path:
    """ArviZ InferenceData of the fit as NetCDF: NUTS's theta draws (chain, draw), or draws
    at the point estimate (mle, svi; svi adds its guide's draws of z)."""
    from ..arviz import save_inference_data, toy_inference_data  # arviz is heavy

    if fitted.draws is not None:
        idata = toy_inference_data(x, theta_draws=fitted.draws, seed=seed)
    else:
        idata = toy_inference_data(x, model=fitted.model, guide=fitted.guide, seed=seed)
    return save_inference_data(idata, path)
