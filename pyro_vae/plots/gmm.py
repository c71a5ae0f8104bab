"""Figures of the Gaussian mixture: components over the data, and the choice of K."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Ellipse

from ..models.gmm import MixtureParams
from .common import save_figure

__all__ = ["save_mixture_figure", "save_selection_curve"]


def save_mixture_figure(x: torch.Tensor, params: MixtureParams, path, title: str) -> Path:
    """Data (N, D) with each component's 1- and 2-sd ellipses; first two PCs when D > 2."""
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
    return save_figure(fig, path)


def save_selection_curve(rows: list[dict], path) -> Path:
    """Train and test log-likelihood per point against K, with BIC and AIC on a second axis."""
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
    # the K each criterion chooses, marked where it chooses it
    best_bic = min(rows, key=lambda row: row["bic"])
    best_test = max(rows, key=lambda row: row["test_log_likelihood"])
    criteria.plot(best_bic["components"], best_bic["bic"], "v", color="C3", markersize=10,
                  label=f"BIC's K = {best_bic['components']}")
    ax.plot(best_test["components"], best_test["test_log_likelihood"], "*", color="C1",
            markersize=14, label=f"best test K = {best_test['components']}")
    ax.set_xticks(ks)  # whole numbers of components only
    lines = ax.get_legend_handles_labels()
    more = criteria.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="center right")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)
