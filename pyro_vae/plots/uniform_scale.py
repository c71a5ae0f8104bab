"""Figures of the uniform-scale toy model: fit, posterior vs guide, the ELBO identity."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from .common import save_figure

__all__ = ["save_toy_fit", "save_posteriors", "save_elbo_identity"]


@torch.no_grad()
def save_toy_fit(x: torch.Tensor, model, path, truth=None) -> Path:
    """Histogram of the data x (N,) with the fitted exact density p(x) (and the true one)."""
    grid = torch.linspace(x.min().item(), x.max().item(), 400, dtype=torch.float64)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(x.numpy(), bins=80, density=True, color="0.8", label=f"data (N={len(x)})")
    t = model.theta()
    ax.plot(grid, model.log_marginal(grid).exp(),
            label=f"fitted: a={t['a']:.3f} b={t['b']:.3f} mu={t['mu']:.3f}")
    if truth is not None:
        t = truth.theta()
        ax.plot(grid, truth.log_marginal(grid).exp(), "--",
                label=f"true: a={t['a']:.3g} b={t['b']:.3g} mu={t['mu']:.3g}")
    ax.set_xlabel("x")
    ax.set_ylabel("density")
    ax.set_title("exact marginal p(x) = [E1(c/b²) - E1(c/a²)] / (2√(2π)(b-a))")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


@torch.no_grad()
def save_posteriors(model, guide, x: torch.Tensor, path, num_shown: int = 4) -> Path:
    """Exact p(z | x) on a grid against q(z | x), for ``num_shown`` of the guide's points x (B,)."""
    a, b = (t.item() for t in model.bounds())
    z = torch.linspace(a, b, 402, dtype=torch.float64)[1:-1]  # the open interval
    log_post = model.log_posterior(x, z)  # (B, G)
    log_q = guide.distribution(x).log_prob(z[:, None]).T  # (B, G)
    distance = (x - model.mu).abs()
    shown = torch.argsort(distance)[np.linspace(0, len(x) - 1, num_shown).round().astype(int)]
    fig, axes = plt.subplots(1, num_shown, figsize=(3.2 * num_shown, 3), sharey=False)
    for ax, i in zip(np.atleast_1d(axes), shown.tolist(), strict=True):
        ax.plot(z, log_post[i].exp(), label="p(z|x) exact")
        ax.plot(z, log_q[i].exp(), "--", label="q(z|x)")
        ax.set_title(f"x = {x[i].item():.2f}")
        ax.set_xlabel("z")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.suptitle("exact posterior on a grid vs guide, support exactly (a, b)", y=1.04)
    return save_figure(fig, path)


def save_elbo_identity(identity, path) -> Path:
    """log p(x), ELBO and ELBO + KL across x (top); KL and the identity's residual (bottom)."""
    x = identity.x.numpy()
    order = np.argsort(x)
    x = x[order]
    log_px, elbo, se, kl = (t.numpy()[order] for t in
                            (identity.log_px, identity.elbo, identity.elbo_se, identity.kl))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 6), sharex=True)
    top.plot(x, log_px, lw=3, alpha=0.5, label="log p(x) exact (E1)")
    top.plot(x, elbo, label="ELBO (Monte Carlo)")
    top.plot(x, elbo + kl, "k:", label="ELBO + KL(q || p(z|x)) (quadrature)")
    top.set_ylabel("nats")
    top.legend(fontsize=8)
    top.set_title("log p(x) = ELBO + KL(q(z|x) || p(z|x))")
    bottom.plot(x, kl, label="KL(q || posterior)")
    residual = log_px - elbo - kl
    bottom.plot(x, residual, label="log p(x) - ELBO - KL")
    bottom.fill_between(x, -2 * se, 2 * se, alpha=0.3, label="±2 Monte Carlo s.e.")
    bottom.set_xlabel("x")
    bottom.set_ylabel("nats")
    bottom.legend(fontsize=8)
    return save_figure(fig, path)
