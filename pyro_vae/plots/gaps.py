"""Figures of the inference gaps: where the nats go, and (for a 2-D code) the posteriors.

``save_gap_bars`` draws the mean gaps over images with their standard errors;
``save_posterior_panels`` draws, for a few images, the exact unnormalised posterior
p(z | x) on a grid with NUTS's draws on it and the two-standard-deviation ellipses of
the encoder's q, the refined q* and the per-image flow, as the lecture's pictures do.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from .common import save_figure

__all__ = ["GAP_BARS", "save_gap_bars", "save_posterior_panels"]

# (key of the summary, label): the bars, top to bottom
GAP_BARS = (
    ("inference_gap", "inference gap\nlog p(x) - ELBO(q)"),
    ("amortization_gap", "amortization gap\nELBO(q*) - ELBO(q)"),
    ("approximation_gap", "approximation gap\nlog p(x) - ELBO(q*)"),
    ("flow_gain", "flow gain\nELBO(flow) - ELBO(q*)"),
)
_COLOURS = {"q": "tab:red", "q*": "tab:blue", "flow": "tab:green"}


def save_gap_bars(summary: dict, path: str | Path, budget: str = "") -> Path:
    """Horizontal bars of the mean gaps (nats per image) with 2-standard-error whiskers.

    ``summary[key]`` is ``{"mean": m, "se": s}`` for each key of :data:`GAP_BARS`; a NaN
    mean (no flow fitted) leaves its bar out.
    """
    bars = [(label, summary[key]) for key, label in GAP_BARS
            if not math.isnan(summary[key]["mean"])]
    fig, ax = plt.subplots(figsize=(6.5, 0.7 * len(bars) + 1.2))
    means = [cell["mean"] for _, cell in bars]
    errors = [2 * cell["se"] if not math.isnan(cell["se"]) else 0.0 for _, cell in bars]
    rows = np.arange(len(bars))[::-1]
    ax.barh(rows, means, xerr=errors, color="tab:blue", alpha=0.8, capsize=4)
    # the numbers go with the labels, clear of the whiskers
    ax.set_yticks(rows, [f"{label}\n{cell['mean']:.2f} ± {cell['se']:.2f}"
                         for label, cell in bars])
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel("nats per image (mean over images; whiskers 2 s.e.)")
    ax.set_title("Where the nats go" + (f"\n{budget}" if budget else ""), fontsize=8)
    return save_figure(fig, path)


def _ellipse(draws: torch.Tensor, radius: float = 2.0) -> np.ndarray:
    """Points (100, 2) of the ellipse mean + radius * chol(cov) * unit circle of draws (S, 2)."""
    mean, cov = draws.mean(0), draws.T.cov()
    angle = torch.linspace(0.0, 2 * math.pi, 100)
    circle = torch.stack([angle.cos(), angle.sin()], -1)
    factor = torch.linalg.cholesky(cov + 1e-9 * torch.eye(2))
    return (mean + radius * circle @ factor.T).numpy()


def save_posterior_panels(panels: list[dict], path: str | Path) -> Path:
    """One panel per image of a 2-D code: p(z | x) on a grid, NUTS draws, q, q*, flow.

    Each panel is ``{"grid": (z1, z2, log p(x, z)), "nuts": (S, 2), "q": (S, 2),
    "q*": (S, 2), "flow": (S, 2)}`` (the flow optional); the grid's density is
    normalised numerically and drawn as filled contours.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        z1, z2, log_density = panel["grid"]
        density = (log_density - log_density.max()).exp()
        ax.contourf(z1.numpy(), z2.numpy(), density.numpy(), levels=8, cmap="Greys")
        nuts = panel["nuts"].numpy()
        ax.scatter(nuts[:, 0], nuts[:, 1], s=2, color="black", alpha=0.4, label="NUTS draws")
        for name, colour in _COLOURS.items():
            if name in panel:
                ring = _ellipse(panel[name])
                ax.plot(ring[:, 0], ring[:, 1], color=colour, label=f"{name} (2 sd)")
        ax.set_xlabel("z1")
        ax.set_ylabel("z2")
    axes[0][0].legend(fontsize=7, loc="best")
    fig.suptitle("p(z | x) (grey), NUTS draws and the variational q's, one image per panel",
                 fontsize=9)
    return save_figure(fig, path)
