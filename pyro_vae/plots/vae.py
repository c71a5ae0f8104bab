"""Figures of the VAE: sample grids, reconstructions, latent maps, training curves.

Each function takes tensors or lists, draws one figure and saves it as PNG.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from .common import image_grid, save_figure

__all__ = [
    "save_sample_grid",
    "save_reconstructions",
    "save_latent_map",
    "save_curves",
    "project_2d",
]


def save_sample_grid(images: torch.Tensor, image_shape, path, title: str = "samples") -> Path:
    """Square grid of images (N, H*W) with values in [0, 1]."""
    columns = math.ceil(math.sqrt(len(images)))
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.imshow(image_grid(images, image_shape, columns), cmap="gray", vmin=0, vmax=1)
    ax.set_title(title)
    ax.axis("off")
    return save_figure(fig, path)


def save_reconstructions(x: torch.Tensor, x_rec: torch.Tensor, image_shape, path) -> Path:
    """Top row: inputs (N, H*W); bottom row: their reconstructions."""
    fig, ax = plt.subplots(figsize=(len(x) * 0.6, 1.5))
    ax.imshow(image_grid(torch.cat([x, x_rec]), image_shape, len(x)), cmap="gray", vmin=0, vmax=1)
    ax.set_title("test images (top) and reconstructions E[x | z = mean of q(z|x)] (bottom)")
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


def save_latent_map(z: torch.Tensor, labels: torch.Tensor | None, path, title: str) -> Path:
    """Scatter of latent codes (N, L), coloured by label; PCA when L > 2."""
    points, axis = project_2d(z)
    fig, ax = plt.subplots(figsize=(6, 5))
    colours = None if labels is None else labels.cpu().numpy()
    scatter = ax.scatter(points[:, 0], points[:, 1], c=colours, cmap="tab10", s=6)
    if labels is not None:
        fig.colorbar(scatter, ax=ax, label="digit")
    ax.set_xlabel(f"{axis}1")
    ax.set_ylabel(f"{axis}2")
    ax.set_title(title)
    return save_figure(fig, path)


def save_curves(
    curves: dict[str, Sequence[float]], path, ylabel: str = "ELBO (nats / example)"
) -> Path:
    """One line per named curve against epoch."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, values in curves.items():
        if len(values):
            ax.plot(range(1, len(values) + 1), values, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.legend()
    ax.grid(alpha=0.3)
    return save_figure(fig, path)
