"""``pyro-vae gmm``: fit the Gaussian mixture by a named route, choose K, draw the figures.

``cli.py`` calls :func:`add_command`; :func:`run_gmm` returns the metrics it also writes
to ``--out/metrics.json`` (log-likelihoods in nats per point, higher is better; BIC and AIC
lower is better).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import DATASETS, _read_numpy, load_dataset
from .errors import UserError
from .experiment import prepare_out, write_metrics
from .mixture_fit import (
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
from .models.gmm import COVARIANCE_TYPES, MixtureParams

__all__ = ["add_command", "run_gmm", "load_gmm_data", "save_mixture_figure", "save_selection_curve"]


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
    array = _read_numpy(path)
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
    metrics["figures"] = {
        "mixture": str(save_mixture_figure(x_train, fitted.params, out / "mixture.png",
                                           f"{args.inference}: K={k}, {args.covariance}")),
        "selection": str(save_selection_curve(selection, out / "selection.png")),
    }
    if args.idata is not None:
        from .workflow import gmm_inference_data, save_inference_data

        idata = gmm_inference_data(x_train, fitted, num_chains=fitted.info.get("num_chains", 1),
                                   seed=args.seed)
        metrics["idata"] = str(save_inference_data(idata, args.idata))
    write_metrics(out, metrics)
    return metrics


def save_mixture_figure(x: torch.Tensor, params: MixtureParams, path, title: str) -> Path:
    """Data (N, D) with each component's 1- and 2-sd ellipses; first two PCs when D > 2."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Ellipse

    from .plots import _save

    x = x.double()
    centre = x.mean(0)
    if x.shape[1] == 1:
        basis, axis = torch.ones(1, 1, dtype=x.dtype), ("x", None)
    elif x.shape[1] == 2:
        basis, axis = torch.eye(2, dtype=x.dtype), ("x1", "x2")
    else:
        basis, axis = torch.linalg.svd(x - centre, full_matrices=False)[2][:2].T, ("PC1", "PC2")
    points = ((x - centre) @ basis).numpy()
    locs = ((params.locs - centre) @ basis).numpy()
    covs = (basis.T @ params.covariances() @ basis).numpy()
    if points.shape[1] == 1:  # a 1-D mixture: show it on a line with a zero second axis
        points = np.hstack([points, np.zeros_like(points)])
    fig, ax = plt.subplots(figsize=(6, 5))
    shown = np.random.default_rng(0).permutation(len(points))[:5000]
    ax.scatter(points[shown, 0], points[shown, 1], s=3, alpha=0.3, color="grey")
    colours = plt.cm.tab10(np.arange(len(locs)) % 10)
    for loc, cov, weight, colour in zip(locs, covs, params.weights.tolist(), colours, strict=True):
        if cov.shape == (1, 1):
            cov = np.diag([cov[0, 0], 1e-12])
            loc = np.array([loc[0], 0.0])
        values, vectors = np.linalg.eigh(cov)
        angle = np.degrees(np.arctan2(vectors[1, -1], vectors[0, -1]))
        for n_sd in (1, 2):
            width, height = 2 * n_sd * np.sqrt(np.clip(values[::-1], 0, None))
            ax.add_patch(Ellipse(loc, width, height, angle=angle, fill=False, color=colour,
                                 lw=1.5 if n_sd == 1 else 0.8))
        ax.plot(*loc, "x", color=colour, label=f"alpha={weight:.2f}")
    ax.set_xlabel(axis[0])
    if axis[1]:
        ax.set_ylabel(axis[1])
    ax.set_title(title + (" (projection)" if x.shape[1] > 2 else ""))
    if len(locs) <= 10:
        ax.legend(fontsize=7)
    return _save(fig, path)


def save_selection_curve(rows: list[dict], path) -> Path:
    """Train and test log-likelihood per point against K, with BIC and AIC on a second axis."""
    import matplotlib.pyplot as plt

    from .plots import _save

    ks = [row["components"] for row in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ks, [row["train_log_likelihood"] for row in rows], "o-", label="train")
    ax.plot(ks, [row["test_log_likelihood"] for row in rows], "s-", label="test")
    ax.set_xlabel("number of components K")
    ax.set_ylabel("log-likelihood (nats / point)")
    criteria = ax.twinx()
    criteria.plot(ks, [row["bic"] for row in rows], "--", color="C3", label="BIC")
    criteria.plot(ks, [row["aic"] for row in rows], ":", color="C4", label="AIC")
    criteria.set_ylabel("BIC, AIC (lower is better)")
    lines = ax.get_legend_handles_labels()
    more = criteria.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)
