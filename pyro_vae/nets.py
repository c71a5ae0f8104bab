"""Encoder and decoder networks, chosen by name."""

from __future__ import annotations

from typing import Sequence

from torch import nn

from .registry import Registry

__all__ = ["NETWORKS", "ACTIVATIONS", "mlp"]

NETWORKS = Registry("network")
ACTIVATIONS = {"softplus": nn.Softplus, "relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU}


@NETWORKS.register("mlp")
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
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), ACTIVATIONS[activation]()]
    layers.append(nn.Linear(sizes[-1], out_features))
    return nn.Sequential(*layers)
