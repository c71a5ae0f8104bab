"""Simulation-based calibration (Talts et al., 2018): rank histograms with their binomial band.

For each of N simulated data sets, the rank of the true parameter among L posterior draws is
uniform on {0, ..., L} when inference is calibrated.  Binned into B groups of ranks, bin j
holding n_j of the L + 1 ranks, its count is then Binomial(N, p_j = n_j / (L + 1)); the band
drawn is that distribution's central 99% interval in every bin, so a calibrated sampler
leaves about one bin in a hundred outside it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from scipy.stats import binom

__all__ = ["rank_bins", "binomial_band", "plot_sbc_ranks"]


def rank_bins(num_draws: int, bins: int) -> np.ndarray:
    """Bin edges (B + 1,) at half-integers, splitting the ranks 0..L into B near-equal groups."""
    if not 1 <= bins <= num_draws + 1:
        raise ValueError(f"bins must be from 1 to L + 1 = {num_draws + 1}, got {bins}")
    sizes = [len(group) for group in np.array_split(np.arange(num_draws + 1), bins)]
    return np.concatenate([[0], np.cumsum(sizes)]) - 0.5


def binomial_band(num_datasets: int, edges: np.ndarray, num_draws: int,
                  level: float = 0.99) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Expected count, lower and upper ends of the central ``level`` interval, per bin (B,).

    Bin j holds n_j = edges[j+1] - edges[j] ranks of L + 1, so under uniform ranks its count
    is Binomial(N, n_j / (L + 1)).
    """
    p = np.diff(edges) / (num_draws + 1)
    tail = (1 - level) / 2
    return (num_datasets * p, binom.ppf(tail, num_datasets, p),
            binom.ppf(1 - tail, num_datasets, p))


def plot_sbc_ranks(ranks: Mapping[str, Sequence[int]], num_draws: int, bins: int = 10,
                   level: float = 0.99) -> plt.Figure:
    """One histogram per parameter of the ranks (each of N data sets) of the true value among
    ``num_draws`` = L posterior draws, over the binomial band of calibrated inference."""
    edges = rank_bins(num_draws, bins)
    fig, axes = plt.subplots(1, len(ranks), figsize=(4 * len(ranks), 3), squeeze=False)
    for ax, (name, values) in zip(axes[0], ranks.items(), strict=True):
        expected, low, high = binomial_band(len(values), edges, num_draws, level)
        # the band as steps over each bin (the last value repeated to close the last step)
        ax.fill_between(edges, np.append(low, low[-1]), np.append(high, high[-1]), step="post",
                        color="0.85", label=f"{level:.0%} binomial band")
        ax.stairs(expected, edges, baseline=None, color="k", ls="--", lw=1,
                  label="expected count")
        ax.hist(values, bins=edges, alpha=0.7, label="data sets")
        ax.set_xlabel(f"rank of the true {name} among {num_draws} draws")
        ax.set_ylabel("data sets")
        ax.set_title(f"{name} ({len(values)} data sets)")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return fig
