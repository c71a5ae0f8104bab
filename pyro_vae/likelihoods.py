"""Likelihoods p(x | z) given the decoder's output, chosen by name.

A likelihood is an ``nn.Module`` with ``decoder_features(data_dim)`` (how many
outputs the decoder needs) and ``forward(decoder_output)`` returning a
distribution with event shape (data_dim,).
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn

from .registry import Registry

__all__ = ["LIKELIHOODS", "BernoulliLikelihood"]

LIKELIHOODS = Registry("likelihood")


class BernoulliLikelihood(nn.Module):
    """Factorized Bernoulli with logits from the decoder: log p(x|z) = -BCE(x, sigmoid(logits)).

    Parameters
    ----------
    binary_data : bool
        ``False`` admits grey levels in [0, 1] (``--binarize none``): the "log-likelihood"
        is then minus the cross-entropy, not the log-probability of any distribution.
    """

    def __init__(self, binary_data: bool = True):
        super().__init__()
        self.binary_data = binary_data

    @staticmethod
    def decoder_features(data_dim: int) -> int:
        return data_dim

    def forward(self, logits: torch.Tensor) -> dist.Distribution:
        # validate_args=None defers to Pyro's global validation setting
        validate = None if self.binary_data else False
        return dist.Bernoulli(logits=logits, validate_args=validate).to_event(1)


LIKELIHOODS.register("bernoulli")(BernoulliLikelihood)
