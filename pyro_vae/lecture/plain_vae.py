"""The hand-written PyTorch VAE that the Pyro model is measured against.

Same networks (built by :func:`pyro_vae.nets.mlp`), same data, same optimizer,
and the lecture's simplified loss per example (the negative ELBO with the
Gaussian KL in closed form):

    -L(x) = BCE(x, s) + 1/2 ||y1||^2 + 1/2 ||exp(y2)||^2 - sum_j y2_j  (+ const)

with (y1, y2) = EncodingNN(x), z = y1 + exp(y2) * u, u ~ N(0, I), s = DecodingNN(z).
The dropped constant is -latent_dim / 2: ``lecture_loss - latent_dim / 2`` equals
``-ELBO`` exactly (see ``tests/test_vae.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..data import minibatch_indices

__all__ = ["lecture_loss", "train_plain_epoch", "plain_optimizer"]


def lecture_loss(
    encoder: nn.Module, decoder: nn.Module, x: torch.Tensor, u: torch.Tensor | None = None
) -> torch.Tensor:
    """The lecture's VAE loss for each row of x (B, D): shape (B,).

    ``u`` (B, latent_dim) is the standard-normal noise of the reparameterization;
    drawn fresh when omitted.
    """
    y1, y2 = encoder(x).chunk(2, dim=-1)
    if u is None:
        u = torch.randn_like(y1)
    z = y1 + y2.exp() * u
    logits = decoder(z)
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
    kl = 0.5 * y1.pow(2).sum(-1) + 0.5 * (2 * y2).exp().sum(-1) - y2.sum(-1)
    return bce + kl


def plain_optimizer(encoder: nn.Module, decoder: nn.Module, lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=lr)


def train_plain_epoch(
    encoder: nn.Module,
    decoder: nn.Module,
    optimizer: torch.optim.Optimizer,
    x_train: torch.Tensor,
    batch_size: int,
    batch_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> float:
    """One epoch of plain PyTorch training on the mean lecture loss; returns seconds taken."""
    start = time.perf_counter()
    for idx in minibatch_indices(x_train.shape[0], batch_size, device=x_train.device):
        x = x_train[idx] if batch_transform is None else batch_transform(x_train[idx])
        loss = lecture_loss(encoder, decoder, x).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if x_train.is_cuda:  # the GPU's work queued by this epoch belongs to its time
        torch.cuda.synchronize(x_train.device)
    return time.perf_counter() - start
