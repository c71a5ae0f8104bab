"""``pyro-vae gmm`` (flags -> :class:`~pyro_vae.experiments.gmm.GMMOptions`) and
``pyro-vae gmm-predict`` (a saved mixture scores new points)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..data import DATASETS
from ..experiments.gmm import (
    GMMOptions,
    Simulation,
    parse_components,
    run_gmm,
    run_gmm_predict,
)
from ..inference.gmm import GMM_ROUTES
from ..models.gmm import COVARIANCE_TYPES
from .common import (
    add_chains,
    add_idata,
    add_out,
    add_reporting,
    add_seed,
    add_tensorboard,
    fresh_out,
)

__all__ = ["add_command"]


def add_command(commands: argparse._SubParsersAction) -> None:
    """Add ``pyro-vae gmm`` and ``gmm-predict`` to the CLI's subcommands (``commands``, the
    subparsers action)."""
    parser = commands.add_parser(
        "gmm", help="fit a Gaussian mixture (map = EM, vi, nuts) and choose K"
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, metavar="PATH.npy", help="N x D array of real numbers")
    source.add_argument("--dataset", choices=DATASETS.names(), help="a named dataset (its pixels)")
    source.add_argument("--simulate", metavar="N,D,K[,SEP]",
                        help="N points from a random K-component mixture in D dims, means "
                             "SEP x N(0, I) apart (default 4); N/4 more points form the test set")
    parser.add_argument("--test", type=Path, metavar="PATH.npy",
                        help="held-out points (default: 20%% of --data, the dataset's test split)")
    parser.add_argument("--pca", type=int, metavar="P",
                        help="project train and test onto the first P principal axes of train")
    parser.add_argument("--components", "-k", required=True, metavar="K|A:B",
                        help="mixture components: K, or a range A:B fitted K by K (by the "
                             "--inference route) of which BIC chooses one, with the held-out "
                             "log-likelihood, BIC and AIC of each")
    parser.add_argument("--covariance", choices=COVARIANCE_TYPES, default=GMMOptions.covariance,
                        help="each component's covariance matrix")
    parser.add_argument("--inference", choices=GMM_ROUTES.names(), default=GMMOptions.inference,
                        help="map (EM), vi (SVI) or nuts (MCMC on the parameters)")
    parser.add_argument("--restarts", type=int, default=GMMOptions.restarts,
                        help="EM restarts (k-means++ starts)")
    parser.add_argument("--reg-covar", type=float, default=GMMOptions.reg_covar,
                        help="added to every variance so no component collapses onto a point")
    parser.add_argument("--steps", type=int, default=GMMOptions.steps,
                        help="vi: full-batch SVI steps")
    parser.add_argument("--samples", type=int, default=GMMOptions.samples,
                        help="nuts: draws per chain (as many warm-up steps)")
    add_chains(parser, GMMOptions.chains)
    add_seed(parser, GMMOptions.seed)
    add_out(parser, None, help="run folder: metrics.json, mixture.pt (for gmm-predict), "
                               "mixture.png, selection.png (default: a new "
                               "runs/gmm-<date>-<time>)")
    add_idata(parser, help="vi, nuts: write ArviZ InferenceData (posterior, predictive, "
                           "per-point log-likelihood) to NetCDF")
    # the flag of train, toy and compare, same help (cli/common.py could hold it once)
    add_tensorboard(parser)
    add_reporting(parser)
    parser.set_defaults(func=_run, summary=_summary)

    predict = commands.add_parser(
        "gmm-predict", help="label and score new points with a mixture that gmm saved",
        description="Write each point's most probable component, its responsibilities "
                    "p(z = j | x) and its log-likelihood log p(x) (nats) to predictions.npz.")
    predict.add_argument("--model", type=Path, required=True, metavar="FILE",
                         help="a mixture.pt written by gmm --out")
    predict.add_argument("--data", type=Path, required=True, metavar="PATH.npy",
                         help="N x D array of the points to score (D as in the fit)")
    add_out(predict, None, help="folder for predictions.npz and metrics.json (default: a new "
                                "runs/gmm-predict-<date>-<time>)")
    add_reporting(predict)
    predict.set_defaults(func=_predict, summary=_predict_summary)


def _run(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed flags as :class:`GMMOptions`, run; the metrics (``main`` prints them)."""
    # parsed here rather than as the flags' argparse types, so that a bad spec reads
    # "pyro-vae gmm: error: --simulate takes ..." like every other bad value of this command
    simulate = None if args.simulate is None else Simulation.parse(args.simulate)
    options = GMMOptions(
        components=parse_components(args.components), data=args.data, dataset=args.dataset,
        simulate=simulate, test=args.test, pca=args.pca, covariance=args.covariance,
        inference=args.inference, restarts=args.restarts, reg_covar=args.reg_covar,
        steps=args.steps, samples=args.samples, chains=args.chains, seed=args.seed,
        out=args.out or fresh_out("gmm"), overwrite=args.overwrite, idata=args.idata,
        tensorboard=args.tensorboard,
    )
    return run_gmm(options)


def _summary(m: dict[str, Any]) -> list[str]:
    chosen = ""
    if "components_tried" in m:
        low, high = m["components_tried"]
        chosen = f", chosen by BIC from K = {low}..{high}"
    diagnostics = m["diagnostics"]
    if "max_rhat" in diagnostics:  # nuts
        chosen += (f"; max R-hat {diagnostics['max_rhat']:.3f} over "
                   f"{diagnostics['num_chains']} chains")
    return [f"K={m['components']} ({m['covariance']}) by {m['inference']}{chosen}: test "
            f"log-likelihood {m['test_log_likelihood']:.4f} nats per point "
            f"({m['log_likelihood_kind']}), BIC {m['bic']:.1f}",
            f"run folder: {Path(m['figures']['mixture']).parent}; the mixture: {m['mixture']} "
            f"(pyro-vae gmm-predict --model {m['mixture']} --data X.npy)"]


def _predict(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed flags, run by :func:`run_gmm_predict`."""
    return run_gmm_predict(args.model, args.data, args.out or fresh_out("gmm-predict"),
                           args.overwrite)


def _predict_summary(m: dict[str, Any]) -> list[str]:
    return [f"{m['num_points']} points, K={m['components']} ({m['covariance']}): mean "
            f"log-likelihood {m['mean_log_likelihood']:.4f} nats per point; points per "
            f"component {m['counts']}",
            f"predictions: {m['predictions']} (labels, responsibilities, log_likelihood)"]
