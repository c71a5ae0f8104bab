"""What the figures say, asserted on matplotlib's objects (titles, labels, ticks, the arrays
drawn, the band's vertices), never on pixels."""

import itertools
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.collections import PolyCollection

from pyro_vae.plots import compare as plots_compare
from pyro_vae.plots import vae as plots_vae
from pyro_vae.plots.common import image_grid
from pyro_vae.plots.compare import far_rows, save_comparison
from pyro_vae.plots.sbc import binomial_band, plot_sbc_ranks, rank_bins
from pyro_vae.plots.vae import (
    curve_labels,
    sample_grid_title,
    save_curves,
    save_latent_map,
    save_reconstructions,
    save_sample_grid,
)


@pytest.fixture
def drawn(monkeypatch):
    """The figures the plot functions would save, kept open for inspection instead."""
    figures = []

    def keep(fig, path):
        figures.append(fig)
        return Path(path)

    for module in (plots_vae, plots_compare):
        monkeypatch.setattr(module, "save_figure", keep)
    yield figures
    for fig in figures:
        plt.close(fig)


def _ticks_in_view(axis) -> np.ndarray:
    low, high = sorted(axis.get_view_interval())
    ticks = np.asarray(axis.get_ticklocs())
    return ticks[(ticks >= low) & (ticks <= high)]


# ---------------------------------------------------------------------------- image tiles


def test_tiles_are_one_blank_pixel_apart():
    """5 black 8x8 digits in 3 columns: 2 x 3 cells 1 px apart, the 6th cell blank."""
    grid = image_grid(torch.zeros(5, 64), (8, 8), columns=3)
    assert grid.shape == (2 * 8 + 1, 3 * 8 + 2)
    assert (grid[8, :] == 1).all()  # the gap between the rows
    assert (grid[:, 8] == 1).all() and (grid[:, 17] == 1).all()  # between the columns
    tiles = [grid[r * 9 : r * 9 + 8, c * 9 : c * 9 + 8] for r in range(2) for c in range(3)]
    assert all((tile == 0).all() for tile in tiles[:5]) and (tiles[5] == 1).all()
    # where the tiles and gaps are: 5 x 64 black pixels, every other pixel blank
    assert (grid == 0).sum() == 5 * 64 and (grid == 1).sum() == grid.size - 5 * 64


def test_train_and_sample_title_the_prior_grid_alike(drawn, tmp_path):
    images = torch.rand(16, 64)
    save_sample_grid(images, (8, 8), tmp_path / "s.png")
    (ax,) = drawn[0].axes
    assert ax.get_title() == sample_grid_title(16) == "16 samples: E[x | z], z ~ p(z)"
    shown = ax.images[0].get_array()
    assert shown.shape == (4 * 9 - 1, 4 * 9 - 1) and (shown[8, :] == 1).all()


# ---------------------------------------------------------------------------- autoencoder


def test_curve_labels_name_the_objective_trained_and_the_one_tested():
    assert curve_labels() == ("train ELBO", "test ELBO")
    train, test = curve_labels(kl_weight=0.0, point_mass=True)  # the plain autoencoder
    assert train == "train log p(x | z*): reconstruction only (kl_weight 0)"
    assert test == "test log p(x, z*)"
    assert curve_labels(kl_weight=0.0)[0] == ("train E_q log p(x | z): reconstruction only "
                                              "(kl_weight 0)")
    assert curve_labels(kl_weight=0.25)[0] == "train beta-ELBO, beta = kl_weight = 0.25"
    assert curve_labels(point_mass=True) == ("train log p(x, z*)", "test log p(x, z*)")


@pytest.mark.parametrize("epochs", [1, 2, 3, 7, 60])
def test_curves_have_whole_epoch_ticks_and_the_labels_given(drawn, tmp_path, epochs):
    train, test = curve_labels(kl_weight=0.0, point_mass=True)
    save_curves({train: list(range(epochs)), test: [-float(e) for e in range(epochs)]},
                tmp_path / "curves.png")
    (ax,) = drawn[0].axes
    drawn[0].canvas.draw()
    ticks = _ticks_in_view(ax.xaxis)
    assert len(ticks) >= 1 and np.array_equal(ticks, np.round(ticks))
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [train, test]
    assert ax.get_xlabel() == "epoch" and ax.get_ylabel() == "nats / example"


def test_a_point_mass_code_is_not_called_a_mean(drawn, tmp_path):
    z, x = torch.randn(20, 2), torch.rand(4, 64)
    save_latent_map(z, None, tmp_path / "latent.png", point_mass=True)
    save_reconstructions(x, x, (8, 8), tmp_path / "rec.png", point_mass=True)
    save_latent_map(z, None, tmp_path / "latent.png")
    titles = [fig.axes[0].get_title() for fig in drawn]
    assert titles[0] == "test images: point code z*(x)"
    assert "z = point code z*(x)" in titles[1] and "mean" not in titles[0] + titles[1]
    assert titles[2] == "test images: mean of q(z|x)"


# ---------------------------------------------------------------------------- comparison


def _table(means: dict[str, float], sd: float | None = 0.001):
    return [{"algorithm": name, "test_log_likelihood_mean": m, "test_log_likelihood_sd": sd,
             "final_bound_mean": m + 0.05, "final_bound_sd": sd} for name, m in means.items()]


TOY = {"trace": -1.7040, "meanfield": -1.7040, "iwae": -1.7029, "renyi": -1.7035,
       "score": -2.0308, "mle": -1.7032, "nuts": -1.7030, "true parameters": -1.7006}


def test_far_rows_are_peeled_only_when_far_beyond_the_others_spread():
    means = list(TOY.values())
    assert far_rows(means, [0.0002] * len(means)) == {4}  # score
    assert far_rows([-123.0, -121.4, -120.1, -121.8], [0.3] * 4) == set()  # the VAE's rows
    assert far_rows([1.0, 1.0, 1.0, 2.0], [0.0] * 4) == set()  # no spread to compare with
    # one far row at each end: neither hides the other
    assert far_rows([0.0, 0.001, 0.0005, 10.0, -10.0, None], [0.0] * 6) == {3, 4}
    # never a majority: the two far ends of four rows stay on the scale
    assert far_rows([0.0, 0.001, 10.0, -10.0], [0.0] * 4) == set()


def test_a_far_row_is_marked_at_the_edge_with_its_value(drawn, tmp_path):
    save_comparison(_table(TOY), tmp_path / "c.png", "toy")
    for ax in drawn[0].axes:
        low, high = ax.get_xlim()
        shown = [m for name, m in TOY.items() if name != "score"]
        offset = 0.05 if ax is drawn[0].axes[1] else 0.0
        assert low < min(shown) + offset - 0.001 and max(shown) + offset + 0.001 < high
        assert high - low < 0.02  # the close rows spread over the axis, not squeezed
        assert not low < TOY["score"] + offset < high
        (note,) = [t for t in ax.texts if "off scale" in t.get_text()]
        assert note.get_text().startswith(f"{TOY['score'] + offset:.4g} ± 0.001")
        assert note.xy == (0.0, 4)  # the left edge, in score's row


def test_comparison_tick_labels_do_not_overlap(drawn, tmp_path):
    """The VAE's final bounds (-128.21 .. -126.61): labels such as -128.5 are wide."""
    rows = [{"algorithm": n, "test_log_likelihood_mean": t, "test_log_likelihood_sd": 0.3,
             "final_bound_mean": b, "final_bound_sd": s} for n, t, b, s in
            [("trace", -121.37, -127.97, 0.66), ("meanfield", -120.09, -126.61, 0.47),
             ("iwae", -122.85, -128.21, 0.45), ("renyi", -121.83, -128.14, 0.38)]]
    save_comparison(rows, tmp_path / "c.png", "vae")
    fig = drawn[0]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        boxes = [label.get_window_extent(renderer) for label in ax.get_xticklabels()
                 if label.get_visible() and label.get_text()]
        assert len(boxes) >= 3
        for a, b in itertools.pairwise(sorted(boxes, key=lambda box: box.x0)):
            assert a.x1 < b.x0, (a, b)


# ---------------------------------------------------------------------------- SBC


def _binomial_quantile(q: float, n: int, p: float) -> int:
    """The smallest k with P(X <= k) >= q for X ~ Binomial(n, p), summed term by term."""
    total = 0.0
    for k in range(n + 1):
        total += math.comb(n, k) * p**k * (1 - p) ** (n - k)
        if total >= q - 1e-12:
            return k
    return n


def test_rank_bins_split_the_ranks_evenly():
    assert np.array_equal(rank_bins(99, 10), np.arange(-0.5, 100, 10))  # 10 ranks per bin
    assert np.array_equal(np.diff(rank_bins(20, 10)), [3] + [2] * 9)  # 21 ranks
    with pytest.raises(ValueError, match="bins must be from 1 to L"):
        rank_bins(5, 7)


def test_binomial_band_is_the_central_99_percent_of_each_bin():
    edges = rank_bins(20, 10)  # one bin of 3 ranks of 21, nine of 2
    expected, low, high = binomial_band(100, edges, 20)
    for j, p in enumerate(np.diff(edges) / 21):
        assert expected[j] == pytest.approx(100 * p)
        assert low[j] == _binomial_quantile(0.005, 100, p)
        assert high[j] == _binomial_quantile(0.995, 100, p)


def test_sbc_histograms_have_labels_and_the_band(tmp_path):
    rng = np.random.default_rng(0)
    ranks = {"a": rng.integers(0, 100, 100).tolist(), "mu": rng.integers(0, 100, 100).tolist()}
    fig = plot_sbc_ranks(ranks, num_draws=99)
    try:
        low, high = _binomial_quantile(0.005, 100, 0.1), _binomial_quantile(0.995, 100, 0.1)
        for ax, (name, values) in zip(fig.axes, ranks.items(), strict=True):
            assert ax.get_xlabel() == f"rank of the true {name} among 99 draws"
            assert ax.get_ylabel() == "data sets"
            (band,) = [c for c in ax.collections if isinstance(c, PolyCollection)]
            ys = band.get_paths()[0].vertices[:, 1]
            assert (ys.min(), ys.max()) == (low, high)
            counts = [patch.get_height() for patch in ax.patches
                      if patch.get_label() != "expected count"]
            assert counts == np.histogram(values, bins=np.arange(-0.5, 100, 10))[0].tolist()
        labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        assert "99% binomial band" in labels
    finally:
        plt.close(fig)
