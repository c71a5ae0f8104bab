"""The comparison figure: one row per algorithm, the two numbers that matter side by side."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from .common import save_figure

__all__ = ["save_comparison"]


def save_comparison(table: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Test log p(x) and final bound per algorithm, mean with sd bars over seeds."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.5 * len(table) + 2))
    names = [entry["algorithm"] for entry in table]
    for ax, metric, label in ((axes[0], "test_log_likelihood", "test log p(x), nats / example"),
                              (axes[1], "final_bound", "final bound on train, nats / example")):
        means = [entry[f"{metric}_mean"] for entry in table]
        errors = [entry[f"{metric}_sd"] or 0.0 for entry in table]
        # points, not bars: a log-density has no natural zero for a bar to start from
        shown = [math.nan if m is None else m for m in means]
        ax.errorbar(shown, range(len(names)), xerr=errors, fmt="o", capsize=3)
        ax.set_yticks(range(len(names)), names)
        finite = [m for m in means if m is not None and math.isfinite(m)]
        if finite:  # the differences matter, not the distance from zero
            low, high = min(finite), max(finite)
            pad = 0.1 * (high - low) + 1e-3 * abs(high)
            ax.set_xlim(low - pad - max(errors), high + pad + max(errors))
        ax.set_xlabel(label)
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    axes[1].set_yticklabels([])
    fig.suptitle(title)
    return save_figure(fig, path)
