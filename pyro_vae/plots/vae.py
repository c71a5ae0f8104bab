"""Figures of the VAE: sample grids, reconstructions, latent maps, training curves.

Each ``save_*`` function takes tensors or lists, draws one figure and saves it as PNG; the
``*_title``/``*_labels`` helpers name what is drawn, so that every command that draws the
same thing calls it the same (``train`` and ``sample`` draw the same grid of prior samples;
a point-mass guide's code is z*(x), not the mean of a q(z|x)).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.ticker import MaxNLocator

from .common import image_grid, save_figure

__all__ = [
    "code_name",
    "curve_labels",
    "sample_grid_title",
    "save_sample_grid",
    "save_reconstructions",
    "save_latent_map",
    "save_curves",
    "project_2d",
]


def sample_grid_title(n: int) -> str:
    """The title of a grid of ``n`` prior samples, the same wherever such a grid is drawn."""
    return f"{n} samples: E[x | z], z ~ p(z)"


def code_name(point_mass: bool = False) -> str:
    """What the guide's code of an image x is: the mean of q(z|x), or for a point-mass
    (``delta``) guide the point z*(x) itself, which has no distribution to take a mean of."""
    return "point code z*(x)" if point_mass else "mean of q(z|x)"


def curve_labels(kl_weight: float = 1.0, point_mass: bool = False) -> tuple[str, str]:
    """Names of the train and test curves that :func:`pyro_vae.train.fit` records per epoch.

    The train curve is the objective trained on, E_q[log p(x|z)] - beta KL(q(z|x) || p(z))
    with beta = ``kl_weight``: the ELBO only at beta = 1, the reconstruction term alone at
    beta = 0 (the plain autoencoder).  The test curve is the ELBO (beta = 1), which for a
    point-mass guide (no entropy) is the log joint log p(x, z*(x)) = log p(x | z*) + log p(z*).
    So an autoencoder's train curve rises while its test curve may fall: the codes z* drift
    where the prior p(z) is small, which training at beta = 0 does not see.
    """
    z = "z*" if point_mass else "z"
    if kl_weight == 1:
        train = f"train log p(x, {z})" if point_mass else "train ELBO"
    elif kl_weight == 0:
        reconstruction = "log p(x | z*)" if point_mass else "E_q log p(x | z)"
        train = f"train {reconstruction}: reconstruction only (kl_weight 0)"
    else:
        train = f"train beta-ELBO, beta = kl_weight = {kl_weight:g}"
    test = "test log p(x, z*)" if point_mass else "test ELBO"
    return train, test


def save_sample_grid(images: torch.Tensor, image_shape, path, title: str | None = None) -> Path:
    """Square grid of images (N, H*W) with values in [0, 1], titled by default as
    :func:`sample_grid_title` (prior samples)."""
    columns = math.ceil(math.sqrt(len(images)))
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.imshow(image_grid(images, image_shape, columns), cmap="gray", vmin=0, vmax=1)
    ax.set_title(sample_grid_title(len(images)) if title is None else title)
    ax.axis("off")
    return save_figure(fig, path)


def save_reconstructions(x: torch.Tensor, x_rec: torch.Tensor, image_shape, path, *,
                         point_mass: bool = False) -> Path:
    """Top row: inputs (N, H*W); bottom row: their reconstructions from the guide's code."""
    fig, ax = plt.subplots(figsize=(len(x) * 0.6, 1.5))
    ax.imshow(image_grid(torch.cat([x, x_rec]), image_shape, len(x)), cmap="gray", vmin=0, vmax=1)
    ax.set_title(f"test images (top) and reconstructions E[x | z = {code_name(point_mass)}] "
                 "(bottom)")
    ax.axis("off")
    return save_figure(fig, path)


def project_2d(z: torch.Tensor) -> tuple[np.ndarray, str]:
    """z (N, L) -> (N, 2): itself when L <= 2, else its first two principal components."""
    z = z.detach().cpu().double().numpy()
    if z.shape[1] == 1:
        return np.hstack([z, np.zeros_like(z)]), "z"
    if z.shape[1] == 2:
        return z, "z"
    centred = z - z.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T, "PC"


def save_latent_map(z: torch.Tensor, labels: torch.Tensor | None, path, title: str | None = None,
                    *, point_mass: bool = False) -> Path:
    """Scatter of latent codes (N, L), coloured by label; PCA when L > 2.  The default title
    names the code (:func:`code_name`) of test images."""
    points, axis = project_2d(z)
    fig, ax = plt.subplots(figsize=(6, 5))
    if labels is None:  # one colour (a colour map without values to map warns)
        ax.scatter(points[:, 0], points[:, 1], s=6)
    else:
        scatter = ax.scatter(points[:, 0], points[:, 1], c=labels.cpu().numpy(), cmap="tab10",
                             s=6)
        fig.colorbar(scatter, ax=ax, label="digit")
    ax.set_xlabel(f"{axis}1")
    ax.set_ylabel(f"{axis}2")
    ax.set_title(f"test images: {code_name(point_mass)}" if title is None else title)
    return save_figure(fig, path)


def save_curves(curves: dict[str, Sequence[float]], path, ylabel: str = "nats / example") -> Path:
    """One line per named curve against epoch (see :func:`curve_labels` for the names)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = max((len(values) for values in curves.values()), default=0)
    for name, values in curves.items():
        if len(values):
            ax.plot(range(1, len(values) + 1), values, "o-" if epochs < 20 else "-", label=name)
    # epochs are whole numbers: ticks on integers only, even for a run of one or two epochs
    # (whose automatic limits, 0.95 to 1.05, hold 1 alone: matplotlib then ticks fractions)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    if epochs:
        ax.set_xlim(0.5, epochs + 0.5)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.legend()
    ax.grid(alpha=0.3)
    return save_figure(fig, path)
