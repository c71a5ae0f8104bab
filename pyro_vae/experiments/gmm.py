"""``pyro-vae gmm``: fit the Gaussian mixture by a named route, choose K, draw the figures.

``pyro_vae.cli`` adds the command; :func:`run_gmm` returns the metrics it also writes
to ``--out/metrics.json`` (log-likelihoods in nats per point, higher is better; BIC and AIC
lower is better).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import DATASETS, load_dataset, read_numpy
from ..errors import UserError
from ..inference.gmm import (
    GMM_ROUTES,
    aic,
    bic,
    check_data,
    fit_gmm,
    log_marginal,
    random_mixture,
    sample_mixture,
    select_components,
)
from ..models.gmm import COVARIANCE_TYPES
from .runs import prepare_out, write_metrics

__all__ = ["add_command", "run_gmm", "load_gmm_data"]


def add_command(commands, common) -> argparse.ArgumentParser:
    """Add the ``gmm`` subcommand to ``commands`` (the CLI's subparsers)."""
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
    parser.add_argument("--components", "-k", type=int, required=True, metavar="K")
    parser.add_argument("--covariance", choices=COVARIANCE_TYPES, default="diag")
    parser.add_argument("--inference", choices=GMM_ROUTES.names(), default="map")
    parser.add_argument("--restarts", type=int, default=3, help="EM restarts (k-means++ starts)")
    parser.add_argument("--reg-covar", type=float, default=1e-6,
                        help="added to every variance so no component collapses onto a point")
    parser.add_argument("--steps", type=int, default=500, help="vi: full-batch SVI steps")
    parser.add_argument("--samples", type=int, default=200,
                        help="nuts: draws per chain (as many warm-up steps; 2 chains)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/gmm"))
    parser.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    parser.add_argument("--idata", type=Path, metavar="FILE.nc",
                        help="vi, nuts: write ArviZ InferenceData (posterior, predictive, "
                             "per-point log-likelihood) to NetCDF")
    common(parser)
    parser.set_defaults(func=run_gmm)
    return parser


def _read_matrix(path: Path, what: str) -> torch.Tensor:
    array = read_numpy(path)
    if not isinstance(array, np.ndarray):
        array.close()
        raise UserError(f"{what} {path} must be a .npy array (N x D), not an .npz archive")
    return check_data(array, f"{what} {path}")


def _pca(x_train: torch.Tensor, x_test: torch.Tensor, p: int) -> tuple[torch.Tensor, torch.Tensor]:
    if not 1 <= p <= x_train.shape[1]:
        raise UserError(f"--pca must be between 1 and D={x_train.shape[1]}, got {p}")
    centre = x_train.mean(0)
    _, _, vt = torch.linalg.svd(x_train - centre, full_matrices=False)
    basis = vt[:p].T
    return (x_train - centre) @ basis, (x_test - centre) @ basis


def load_gmm_data(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(x_train, x_test, description) as float64 tensors from the command's source flags."""
    if args.simulate is not None:
        try:
            fields = [float(v) for v in args.simulate.split(",")]
            n, d, k = (int(v) for v in fields[:3])
            separation = fields[3] if len(fields) > 3 else 4.0
            integers = all(v == int(v) for v in fields[:3])
            if len(fields) not in (3, 4) or min(n, d, k) < 1 or not integers:
                raise ValueError
        except ValueError:
            raise UserError(
                f"--simulate takes N,D,K[,SEP] with positive integers N, D, K; "
                f"got {args.simulate!r}"
            ) from None
        truth = random_mixture(k, d, separation=separation, anisotropy=3.0,
                               full=args.covariance == "full", seed=args.seed)
        generator = torch.Generator().manual_seed(args.seed)
        x_train, _ = sample_mixture(truth, n, generator)
        x_test, _ = sample_mixture(truth, max(1, n // 4), generator)
        source = f"simulated: {n} points, D={d}, K={k}, separation {separation:g}"
    elif args.dataset is not None:
        data = load_dataset(args.dataset)
        x_train = check_data(data.x_train, args.dataset)
        x_test = check_data(data.x_test, f"{args.dataset} test split")
        source = f"{args.dataset} (pixels in [0, 1])"
    else:
        x = _read_matrix(args.data, "--data")
        source = str(args.data)
        if args.test is None:
            if len(x) < 2:
                raise UserError(
                    f"--data {args.data} has {len(x)} row; need 2 or more to hold some out"
                )
            order = torch.randperm(len(x), generator=torch.Generator().manual_seed(args.seed))
            n_test = max(1, len(x) // 5)
            x_train, x_test = x[order[n_test:]], x[order[:n_test]]
        else:
            x_train = x
    if args.test is not None:
        if args.data is None:
            raise UserError(
                "--test goes with --data; named and simulated data bring their own test set"
            )
        x_test = _read_matrix(args.test, "--test")
        if x_test.shape[1] != x_train.shape[1]:
            raise UserError(
                f"--test has D={x_test.shape[1]} features but --data has D={x_train.shape[1]}"
            )
    if args.pca is not None:
        x_train, x_test = _pca(x_train, x_test, args.pca)
        source += f", first {args.pca} principal components"
    return x_train, x_test, source


def run_gmm(args: argparse.Namespace) -> dict[str, Any]:
    """Fit, score, choose K and draw; returns the metrics written to ``--out/metrics.json``."""
    x_train, x_test, source = load_gmm_data(args)
    n, d = x_train.shape
    k = args.components
    if not 1 <= k <= n:
        raise UserError(f"--components must be between 1 and the N={n} training points, got {k}")
    if args.reg_covar < 0:
        raise UserError(f"--reg-covar must be >= 0, got {args.reg_covar}")
    if args.steps < 1 or args.samples < 2:
        raise UserError("--steps must be >= 1 and --samples >= 2")
    if args.idata is not None and (args.inference == "map" or args.idata.suffix != ".nc"):
        raise UserError("--idata needs posterior draws (--inference vi or nuts) and a file name "
                        "ending in .nc")
    out = prepare_out(args.out, args.overwrite)
    fitted = fit_gmm(x_train, k, args.covariance, args.inference, seed=args.seed,
                     restarts=args.restarts, reg_covar=args.reg_covar, steps=args.steps,
                     num_samples=args.samples, warmup_steps=args.samples)
    plug_in_total = log_marginal(x_train, fitted.params).sum().item()
    # K from 1 to K + 2 by the fast EM route: the curve and the BIC/AIC choice
    ks = list(range(1, min(k + 2, n) + 1))
    selection = select_components(x_train, x_test, ks, args.covariance, "map", seed=args.seed,
                                  restarts=args.restarts, reg_covar=args.reg_covar)
    metrics = {
        "data": source,
        "num_train": n,
        "num_test": x_test.shape[0],
        "dim": d,
        "components": k,
        "covariance": args.covariance,
        "inference": args.inference,
        "train_log_likelihood": fitted.log_likelihood(x_train).mean().item(),
        "test_log_likelihood": fitted.log_likelihood(x_test).mean().item(),
        "log_likelihood_kind": "plug-in log p(x | MAP)" if fitted.samples is None
        else "posterior predictive log mean_s p(x | theta_s)",
        "bic": bic(plug_in_total, n, k, d, args.covariance),
        "aic": aic(plug_in_total, k, d, args.covariance),
        "weights": fitted.params.weights.tolist(),
        "means": fitted.params.locs.tolist(),
        "scales": fitted.params.scales.tolist(),
        "seconds": fitted.seconds,
        "diagnostics": fitted.info,
        "selection": selection,
        "best_k": {
            "bic": min(selection, key=lambda row: row["bic"])["components"],
            "aic": min(selection, key=lambda row: row["aic"])["components"],
            "test_log_likelihood": max(selection, key=lambda row: row["test_log_likelihood"])[
                "components"],
        },
    }
    from ..plots.gmm import save_mixture_figure, save_selection_curve  # matplotlib

    metrics["figures"] = {
        "mixture": str(save_mixture_figure(x_train, fitted.params, out / "mixture.png",
                                           f"{args.inference}: K={k}, {args.covariance}")),
        "selection": str(save_selection_curve(selection, out / "selection.png")),
    }
    if args.idata is not None:
        from ..arviz import gmm_inference_data, save_inference_data  # arviz is heavy

        idata = gmm_inference_data(x_train, fitted, num_chains=fitted.info.get("num_chains", 1),
                                   seed=args.seed)
        metrics["idata"] = str(save_inference_data(idata, args.idata))
    write_metrics(out, metrics)
    return metrics
