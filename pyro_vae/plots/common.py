"""What every figure shares: saving it, and tiling images into one array."""

from __future__ import annotations

import math
from pathlib import Path

# no matplotlib.use() here: a library must not take the backend from a notebook's inline one
# (matplotlib falls back to Agg by itself where there is no display)
import matplotlib.pyplot as plt
import numpy as np
import torch

from ..files import atomic_write

__all__ = ["image_grid", "save_figure"]


def image_grid(images: torch.Tensor, image_shape: tuple[int, int], columns: int,
               gap: int = 1, fill: float = 1.0) -> np.ndarray:
    """Tile images (N, H*W) into one (rows*(H+gap)-gap, columns*(W+gap)-gap) array.

    Tiles are ``gap`` pixels apart and blank cells are padded, both with ``fill`` (white
    for images in [0, 1] on a grey colour map): digits on a black background would
    otherwise run into one another, an 8x8 digit most of all.
    """
    h, w = image_shape
    rows = math.ceil(len(images) / columns)
    canvas = np.full((rows * (h + gap) - gap, columns * (w + gap) - gap), fill)
    for i, image in enumerate(images.detach().cpu().numpy().reshape(-1, h, w)):
        r, c = divmod(i, columns)
        top, left = r * (h + gap), c * (w + gap)
        canvas[top : top + h, left : left + w] = image
    return canvas


def save_figure(fig, path: str | Path) -> Path:
    """Save ``fig`` as a PNG at ``path`` (creating its folder; whole or not at all) and close
    it; the path."""
    path = Path(path)
    with atomic_write(path) as file:
        fig.savefig(file, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
