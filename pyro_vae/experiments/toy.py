"""The uniform-scale toy model end to end: data -> fit -> exact numbers -> metrics and figures."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
from torch import nn

from ..elbos import log_importance_weights
from ..errors import UserError
from ..guides.uniform_scale import LocalUniformScaleGuide, fit_local_guide
from ..inference.uniform_scale import (
    TOY_INFERENCES,
    ToyFit,
    ToyOptions,
    elbo_identity,
    load_toy_data,
    parse_simulate,
    simulate,
)
from ..lecture.gradients import compare_gradient_estimators
from ..models.uniform_scale import UniformScale, log_marginal_quadrature
from ..rng import single_thread
from .runs import prepare_out, write_metrics

__all__ = ["run_toy", "add_command"]


def _figure_guide(fitted: ToyFit, x: torch.Tensor, seed: int) -> tuple[nn.Module, torch.Tensor]:
    """The guide and points for the posterior and identity figures.

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


def _check_options(options: ToyOptions) -> None:
    for name in ("steps", "num_particles", "warmup", "samples"):
        if getattr(options, name) < 1:
            flag = name.replace("_", "-")
            raise UserError(f"--{flag} must be >= 1, got {getattr(options, name)}")
    if not options.lr > 0:
        raise UserError(f"--lr must be positive, got {options.lr}")


def run_toy(args: argparse.Namespace) -> dict[str, Any]:
    """What ``pyro-vae toy`` runs: data -> fit -> exact numbers -> metrics.json and figures.

    The metrics (nats per point; higher is better for both):

    ``a, b, mu``                   fitted theta (the posterior mean for NUTS)
    ``log_likelihood``             exact mean log p(x) at theta, E1 closed form
    ``log_likelihood_quadrature``  the same by adaptive quadrature over z
    ``elbo``, ``elbo_gap``         the guide's mean ELBO and log p(x) - ELBO (SVI only)
    ``seconds``                    wall time of the fit alone
    ``identity_max_abs_z``         largest |log p(x) - ELBO - KL| / s.e. on a grid of x
    ``mean_kl_on_grid``            mean KL(q(z|x) || p(z|x)) over that grid
    ``gradient_variance_ratio``    score-function / reparameterized ELBO-gradient variance
    plus route-specific standard errors (mle), posterior sd, ESS, R-hat, divergences (nuts).
    """
    from ..plots import toy as toy_plots  # matplotlib: imported when figures are drawn

    options = ToyOptions(steps=args.steps, lr=args.lr, num_particles=args.num_particles,
                         warmup=args.warmup, samples=args.samples)
    _check_options(options)
    if args.idata is not None and (args.inference == "mle" or args.idata.suffix != ".nc"):
        raise UserError("--idata needs posterior draws (--inference svi, nuts or nuts-latent) "
                        "and a file name ending in .nc")
    truth = None
    if args.simulate is not None:
        a, b, mu, n = parse_simulate(args.simulate)
        truth = UniformScale(a, b, mu)
        x = simulate(a, b, mu, n, seed=args.seed)
        source = f"simulated a={a} b={b} mu={mu} N={n} seed={args.seed}"
    else:
        x = load_toy_data(args.data)
        source = str(args.data)
    out = prepare_out(args.out, args.overwrite) if args.out is not None else None
    with single_thread():
        fitted = TOY_INFERENCES.get(args.inference)(x, seed=args.seed, options=options)
        metrics = {"inference": args.inference, "data": source, "num_points": x.shape[0],
                   **_summarize(fitted, x, args.seed)}
        if truth is not None:
            with torch.no_grad():
                metrics["true_log_likelihood"] = truth.log_marginal(x).mean().item()
        guide, grid = _figure_guide(fitted, x, args.seed)
        pyro.set_rng_seed(args.seed)
        identity = elbo_identity(fitted.model, guide, grid)
        metrics["identity_max_abs_z"] = identity.z_scores.abs().max().item()
        metrics["mean_kl_on_grid"] = identity.kl.mean().item()
        pyro.set_rng_seed(args.seed)
        params = list(guide.parameters())
        sample = x[:100] if fitted.guide is not None else grid
        gradients = compare_gradient_estimators(fitted.model, guide, sample, params,
                                                num_repeats=100)
        metrics["gradient_variance_ratio"] = gradients.variance_ratio
        if out is not None:
            metrics["figures"] = {
                "fit": str(toy_plots.save_toy_fit(x, fitted.model, out / "fit.png", truth)),
                "posterior": str(toy_plots.save_posteriors(fitted.model, guide, grid,
                                                           out / "posterior.png")),
                "elbo_identity": str(toy_plots.save_elbo_identity(identity,
                                                                  out / "elbo_identity.png")),
            }
            write_metrics(out, metrics)
        if args.idata is not None:
            metrics["idata"] = str(_write_idata(fitted, x, args.idata, args.seed))
            if out is not None:
                write_metrics(out, metrics)
    elbo = "" if metrics["elbo"] is None else f"  ELBO {metrics['elbo']:.4f}"
    print(f"{args.inference}: a={metrics['a']:.4f} b={metrics['b']:.4f} mu={metrics['mu']:.4f}"
          f"  log p(x) {metrics['log_likelihood']:.4f} nats/point{elbo}"
          f"  ({metrics['seconds']:.1f} s)")
    return metrics


def _write_idata(fitted: ToyFit, x: torch.Tensor, path: Path, seed: int) -> Path:
    """ArviZ InferenceData of the fit as NetCDF: theta draws (NUTS) or guide draws of z (SVI)."""
    from ..arviz import save_inference_data, toy_inference_data  # arviz is heavy

    if fitted.draws is not None:
        idata = toy_inference_data(x, theta_draws=fitted.draws, seed=seed)
    else:
        idata = toy_inference_data(x, model=fitted.model, guide=fitted.guide, seed=seed)
    return save_inference_data(idata, path)


def add_command(commands: argparse._SubParsersAction, common: Callable) -> None:
    """Add ``pyro-vae toy`` to the CLI's subcommands."""
    parser = commands.add_parser(
        "toy", help="fit the toy model z ~ Uniform(a, b), x | z ~ Normal(mu, z)",
        description="Fit theta = (a, b, mu) of the uniform-scale toy model; report the exact "
                    "log-likelihood per point at the fitted theta.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, metavar="PATH.npy", help="1-D array of N points")
    source.add_argument("--simulate", metavar="a,b,mu,N", help="draw N points at this theta")
    parser.add_argument("--inference", required=True, choices=TOY_INFERENCES.names())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="folder for metrics.json and figures")
    parser.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    parser.add_argument("--idata", type=Path, metavar="FILE.nc",
                        help="write ArviZ InferenceData (posterior, predictive, log-likelihood)")
    defaults = ToyOptions()
    parser.add_argument("--steps", type=int, default=defaults.steps, help="SVI steps")
    parser.add_argument("--lr", type=float, default=defaults.lr, help="SVI learning rate")
    parser.add_argument("--num-particles", type=int, default=defaults.num_particles,
                        help="ELBO particles per SVI step")
    parser.add_argument("--warmup", type=int, default=defaults.warmup, help="NUTS warmup steps")
    parser.add_argument("--samples", type=int, default=defaults.samples, help="NUTS samples")
    common(parser)
    parser.set_defaults(func=run_toy)
