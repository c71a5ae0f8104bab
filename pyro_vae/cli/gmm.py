"""``pyro-vae gmm``: the flags, turned into :class:`~pyro_vae.experiments.gmm.GMMOptions`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..data import DATASETS
from ..experiments.gmm import GMMOptions, Simulation, run_gmm
from ..inference.gmm import GMM_ROUTES
from ..models.gmm import COVARIANCE_TYPES
from .common import add_idata, add_out, add_reporting, add_seed, fresh_out

__all__ = ["add_command"]


def add_command(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``pyro-vae gmm`` to the CLI's subcommands (``commands``, the subparsers action)."""
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
    parser.add_argument("--components", "-k", type=int, required=True, metavar="K",
                        help="mixture components of the fit (EM also sweeps 1..K+2 to choose)")
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
                        help="nuts: draws per chain (as many warm-up steps; 2 chains)")
    add_seed(parser, GMMOptions.seed)
    add_out(parser, None, help="run folder: metrics.json, mixture.png, selection.png (default: "
                               "a new runs/gmm-<date>-<time>)")
    add_idata(parser, help="vi, nuts: write ArviZ InferenceData (posterior, predictive, "
                           "per-point log-likelihood) to NetCDF")
    add_reporting(parser)
    parser.set_defaults(func=_run, summary=_summary)
    return parser


def _run(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed flags as :class:`GMMOptions`, run; the metrics (``main`` prints them)."""
    # parsed here rather than as the flag's argparse type, so that a bad spec reads
    # "pyro-vae gmm: error: --simulate takes ..." like every other bad value of this command
    simulate = None if args.simulate is None else Simulation.parse(args.simulate)
    options = GMMOptions(
        components=args.components, data=args.data, dataset=args.dataset, simulate=simulate,
        test=args.test, pca=args.pca, covariance=args.covariance, inference=args.inference,
        restarts=args.restarts, reg_covar=args.reg_covar, steps=args.steps,
        samples=args.samples, seed=args.seed, out=args.out or fresh_out("gmm"),
        overwrite=args.overwrite,
        idata=args.idata,
    )
    return run_gmm(options)


def _summary(m: dict[str, Any]) -> list[str]:
    return [f"K={m['components']} ({m['covariance']}) by {m['inference']}: test "
            f"log-likelihood {m['test_log_likelihood']:.4f} nats per point "
            f"({m['log_likelihood_kind']}), BIC {m['bic']:.1f}",
            f"run folder: {Path(m['figures']['mixture']).parent}"]
