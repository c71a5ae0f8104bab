"""Encoder and decoder networks, chosen by name from :data:`NETWORKS`.

A network entry builds the pair ``(encoder, decoder)``: the encoder maps
(..., data_dim) to (..., encoder_features) and the decoder maps (..., latent_dim)
to (..., decoder_features), any leading particle or batch dimensions passing
through.  It is called with the keyword arguments its signature names, out of
``data_dim``, ``latent_dim``, ``encoder_features``, ``decoder_features``,
``image_shape`` and the ``[model]`` config entries (``hidden``, ``activation``,
``channels``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .registry import Registry

__all__ = ["NETWORKS", "ACTIVATIONS", "mlp", "mlp_pair", "ConvEncoder", "ConvDecoder", "conv_pair"]

NETWORKS = Registry("network")
ACTIVATIONS = {"softplus": nn.Softplus, "relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU}


def mlp(
    in_features: int,
    out_features: int,
    hidden: Sequence[int] = (400,),
    activation: str = "softplus",
) -> nn.Sequential:
    """Fully connected net ``in -> hidden... -> out``; the output layer is linear.

    Maps (..., in_features) to (..., out_features), so extra leading particle or
    batch dimensions pass through.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"unknown activation {activation!r}; choose one of: {', '.join(sorted(ACTIVATIONS))}"
        )
    sizes = [in_features, *hidden]
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(n_in, n_out), ACTIVATIONS[activation]()]
    layers.append(nn.Linear(sizes[-1], out_features))
    return nn.Sequential(*layers)


@NETWORKS.register("mlp")
def mlp_pair(
    data_dim: int,
    latent_dim: int,
    encoder_features: int,
    decoder_features: int,
    hidden: Sequence[int] = (400,),
    activation: str = "softplus",
) -> tuple[nn.Sequential, nn.Sequential]:
    """MLP encoder ``D -> reversed(hidden) -> E`` and decoder ``L -> hidden -> F`` (mirrored)."""
    encoder = mlp(data_dim, encoder_features, list(reversed(hidden)), activation)
    decoder = mlp(latent_dim, decoder_features, hidden, activation)
    return encoder, decoder


def _image_side(image_shape: Sequence[int] | None, data_dim: int) -> tuple[int, int]:
    """(H, W) of the images, both divisible by 4 (two stride-2 layers halve them twice)."""
    if image_shape is None:  # a user's flat file: accept square images
        side = math.isqrt(data_dim)
        image_shape = (side, side) if side * side == data_dim else None
    if image_shape is None or any(s % 4 for s in image_shape):
        raise ValueError(
            f"model.network = 'conv' needs square or known H x W images with H and W divisible "
            f"by 4 (28x28, 8x8); got {data_dim} features, image shape {image_shape}"
        )
    return tuple(image_shape)


class ConvEncoder(nn.Module):
    """Two stride-2 4x4 convolutions (H x W -> H/4 x W/4), then an MLP to ``out_features``.

    Maps (..., H*W) to (..., out_features).
    """

    def __init__(self, image_shape, out_features: int, channels, hidden, activation: str):
        super().__init__()
        self.image_shape = tuple(image_shape)
        c1, c2 = channels
        act = ACTIVATIONS[activation]
        self.conv = nn.Sequential(
            nn.Conv2d(1, c1, 4, stride=2, padding=1), act(),
            nn.Conv2d(c1, c2, 4, stride=2, padding=1), act(),
        )
        h, w = self.image_shape
        flat = c2 * (h // 4) * (w // 4)
        self.head = mlp(flat, out_features, hidden, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch_shape = x.shape[:-1]
        images = x.reshape(-1, 1, *self.image_shape)
        features = self.conv(images).flatten(1)
        return self.head(features).reshape(*batch_shape, -1)


class ConvDecoder(nn.Module):
    """An MLP to a (C2, H/4, W/4) map, two stride-2 4x4 transposed convolutions to (K, H, W).

    Maps (..., latent_dim) to (..., K*H*W), channel-major, K = out_features / (H*W)
    (2 for a Beta likelihood's two concentrations, flattened like ``chunk(2, -1)`` expects).
    """

    def __init__(self, image_shape, latent_dim: int, out_features: int, channels, hidden,
                 activation: str):
        super().__init__()
        self.image_shape = tuple(image_shape)
        h, w = self.image_shape
        if out_features % (h * w):
            raise ValueError(
                f"conv decoder output {out_features} is not a multiple of {h * w} pixels"
            )
        c1, c2 = channels
        act = ACTIVATIONS[activation]
        self.start = (c2, h // 4, w // 4)
        self.head = nn.Sequential(
            mlp(latent_dim, c2 * (h // 4) * (w // 4), hidden, activation), act()
        )
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1), act(),
            nn.ConvTranspose2d(c1, out_features // (h * w), 4, stride=2, padding=1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        batch_shape = z.shape[:-1]
        maps = self.head(z.reshape(-1, z.shape[-1])).reshape(-1, *self.start)
        return self.deconv(maps).reshape(*batch_shape, -1)


@NETWORKS.register("conv")
def conv_pair(
    data_dim: int,
    latent_dim: int,
    encoder_features: int,
    decoder_features: int,
    image_shape: Sequence[int] | None = None,
    channels: Sequence[int] = (32, 64),
    hidden: Sequence[int] = (256,),
    activation: str = "relu",
) -> tuple[ConvEncoder, ConvDecoder]:
    """Small convolutional encoder and decoder for one-channel images with H, W divisible by 4."""
    shape = _image_side(image_shape, data_dim)
    if len(channels) != 2:
        raise ValueError(
            f"model.channels must list 2 channel counts for 'conv', got {list(channels)}"
        )
    encoder = ConvEncoder(shape, encoder_features, channels, hidden, activation)
    decoder = ConvDecoder(shape, latent_dim, decoder_features, channels, hidden, activation)
    return encoder, decoder
