"""The comparison figure: one row per algorithm, the two numbers that matter side by side."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from .common import save_figure

__all__ = ["far_rows", "save_comparison"]

# a row is drawn off scale when its mean is this many times the spread of the other rows away
# from them: a reader wants the differences among the close rows, and the far row's value
FAR = 5.0


def _spread(means: list[float], errors: list[float], rows: list[int]) -> float:
    """Width of the interval holding every mean ± sd of ``rows``."""
    return (max(means[i] + errors[i] for i in rows) - min(means[i] - errors[i] for i in rows))


def far_rows(means: list[float | None], errors: list[float]) -> set[int]:
    """Rows whose mean lies more than ``FAR`` times the spread of the rows between the lowest
    and the highest away from them.

    Peeled from both ends while a majority of the finite rows stays: with six rows at
    -1.704 ± 0.001 and one at -2.031, the axis showing all seven would put the six on one
    pixel.  Each end is measured against the rows inside both ends, so that a far row at one
    end does not hide another at the other; rows whose spread is zero (all equal, no sd)
    make no row far.
    """
    kept = sorted((i for i, m in enumerate(means) if m is not None and math.isfinite(m)),
                  key=lambda i: means[i])
    far: set[int] = set()
    majority = len(kept) // 2 + 1
    while len(kept) > max(majority, 2):
        inner = kept[1:-1]
        spread = _spread(means, errors, inner)
        ends = {end for end in (kept[0], kept[-1])
                if spread > 0 and min(abs(means[end] - means[i]) for i in inner) > FAR * spread}
        if not ends or len(kept) - len(ends) < majority:
            break
        far |= ends
        kept = [i for i in kept if i not in ends]
    return far


def _mark_off_scale(ax, row: int, mean: float, sd: float | None, right: bool) -> None:
    """An arrow at the axis edge in ``row`` pointing to where the row's mean lies, with it."""
    value = f"{mean:.4g}" + ("" if sd is None else f" ± {sd:.2g}")
    edge, inside = (1.0, 0.72) if right else (0.0, 0.28)
    # x in axes fraction (the edge of the drawn range), y in data (the row)
    ax.annotate(f"{value} (off scale)", xy=(edge, row), xytext=(inside, row),
                xycoords=ax.get_yaxis_transform(), textcoords=ax.get_yaxis_transform(),
                ha="center", va="center", fontsize=8, color="C3",
                arrowprops={"arrowstyle": "->", "color": "C3"})


def save_comparison(table: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Test log p(x) and final bound per algorithm, mean with sd bars over seeds.

    Each panel's axis spans the rows' means ± sd; a row far from the others
    (:func:`far_rows`) is left off the scale and marked by an arrow at the edge with its value.
    """
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.5 * len(table) + 2))
    names = [entry["algorithm"] for entry in table]
    for ax, metric, label in ((axes[0], "test_log_likelihood", "test log p(x), nats / example"),
                              (axes[1], "final_bound", "final bound on train, nats / example")):
        means = [entry[f"{metric}_mean"] for entry in table]
        errors = [entry[f"{metric}_sd"] or 0.0 for entry in table]
        far = far_rows(means, errors)
        # points, not bars: a log-density has no natural zero for a bar to start from
        shown = [math.nan if m is None or i in far else m for i, m in enumerate(means)]
        ax.errorbar(shown, range(len(names)), xerr=errors, fmt="o", capsize=3)
        ax.set_yticks(range(len(names)), names)
        rows = [i for i, m in enumerate(shown) if math.isfinite(m)]
        if rows:  # the differences matter, not the distance from zero
            low = min(means[i] - errors[i] for i in rows)
            high = max(means[i] + errors[i] for i in rows)
            pad = 0.1 * (high - low) + 1e-3 * abs(high)
            ax.set_xlim(low - pad, high + pad)
            for i in far:
                _mark_off_scale(ax, i, means[i], table[i][f"{metric}_sd"], means[i] > high)
        # at most 5 ticks: labels such as -128.5 are wide and would run into one another
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
        ax.set_xlabel(label)
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    axes[1].set_yticklabels([])
    fig.suptitle(title)
    return save_figure(fig, path)
