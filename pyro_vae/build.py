"""The VAE a config describes: registered parts put together by name.

``build_vae(config, data_dim)`` looks each piece up in its registry (likelihood, guide,
network, prior) and calls it with the config entries its signature names, so a new
piece is one registered function: neither this module nor the model changes.  A non-empty
``[model] latent_dims = [d1, d2]`` builds the two-layer VAE instead
(:func:`build_hierarchical_vae`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .config import RunConfig
from .errors import UserError
from .guides import GUIDES
from .guides.hierarchical import HierarchicalGaussianGuide
from .likelihoods import LIKELIHOODS
from .models.hierarchical import HierarchicalVAE
from .models.vae import VAE
from .nets import NETWORKS, mlp
from .priors import PRIORS

__all__ = ["build_vae", "build_hierarchical_vae", "init_decoder_bias"]


def _build(factory: Callable, available: dict[str, Any]):
    """Call ``factory`` with the entries of ``available`` that its signature names.

    This is how a registered piece asks for what it needs (the ``vamp`` prior for the
    guide, ``conv`` for the image shape, ``student_t`` for ``df``) without every
    factory having to accept every option.
    """
    parameters = inspect.signature(factory).parameters
    return factory(**{k: v for k, v in available.items() if k in parameters})


def build_vae(
    config: RunConfig,
    data_dim: int,
    *,
    binary_data: bool = True,
    image_shape: tuple[int, int] | None = None,
) -> tuple[VAE | HierarchicalVAE, nn.Module]:
    """The (model, guide) pair that ``config`` describes, for data of ``data_dim`` features.

    Build order: likelihood and guide class (they fix the networks' output sizes),
    networks, guide, prior (last, because the ``vamp`` prior uses the guide's encoder).
    ``image_shape`` (H, W) is needed by the ``conv`` network for non-square images.
    With ``config.model.latent_dims`` set, the two-layer pair of
    :func:`build_hierarchical_vae`.
    """
    if config.model.latent_dims:
        return build_hierarchical_vae(
            config, data_dim, binary_data=binary_data, image_shape=image_shape
        )
    m = config.model
    latent = m.latent_dim
    likelihood = _build(
        LIKELIHOODS.get(config.likelihood.name),
        dict(vars(config.likelihood), data_dim=data_dim, binary_data=binary_data),
    )
    guide_cls = GUIDES.get(config.guide.name)
    encoder, decoder = _build(
        NETWORKS.get(m.network),
        dict(
            vars(m),
            data_dim=data_dim,
            encoder_features=guide_cls.encoder_features(latent),
            decoder_features=likelihood.decoder_features(data_dim),
            image_shape=image_shape,
        ),
    )
    guide = _build(guide_cls, dict(vars(config.guide), encoder=encoder, latent_dim=latent))
    prior = _build(
        PRIORS.get(config.prior.name),
        dict(vars(config.prior), latent_dim=latent, data_dim=data_dim, guide=guide),
    )
    return VAE(prior, decoder, likelihood), guide


def build_hierarchical_vae(
    config: RunConfig,
    data_dim: int,
    *,
    binary_data: bool = True,
    image_shape: tuple[int, int] | None = None,
) -> tuple[HierarchicalVAE, HierarchicalGaussianGuide]:
    """The two-layer VAE of ``config.model.latent_dims = [d1, d2]`` and its guide.

    x <-> z1: the ``model.network`` pair (``mlp``: encoder D -> reversed(hidden) -> 2 d1,
    decoder d1 -> hidden -> F, F the likelihood's parameter count); z1 <-> z2: MLPs
    z1 -> reversed(hidden_between) -> 2 d2 (q(z2 | z1)) and z2 -> hidden_between -> 2 d1
    (p(z1 | z2)), all with ``model.activation``.  p(z2) is the ``normal`` prior in d2
    dimensions; the guide is Gaussian at both layers.

    Raises
    ------
    UserError
        For a prior other than ``normal`` or a guide other than ``gaussian``.
    """
    m = config.model
    d1, d2 = m.latent_dims
    if config.prior.name != "normal":
        raise UserError(f"model.latent_dims (two stochastic layers) takes prior.name = 'normal' "
                        f"for z2, not {config.prior.name!r}")
    if config.guide.name != "gaussian":
        raise UserError(f"model.latent_dims (two stochastic layers) takes guide.name = "
                        f"'gaussian', not {config.guide.name!r}")
    likelihood = _build(
        LIKELIHOODS.get(config.likelihood.name),
        dict(vars(config.likelihood), data_dim=data_dim, binary_data=binary_data),
    )
    encoder, decoder = _build(
        NETWORKS.get(m.network),
        dict(
            vars(m),
            data_dim=data_dim,
            latent_dim=d1,
            encoder_features=2 * d1,  # mean and log-scale of q(z1 | x)
            decoder_features=likelihood.decoder_features(data_dim),
            image_shape=image_shape,
        ),
    )
    # mirrored like the x <-> z1 pair: the guide's net widens towards the data side
    upper = mlp(d1, 2 * d2, list(reversed(m.hidden_between)), m.activation)
    between = mlp(d2, 2 * d1, m.hidden_between, m.activation)
    top_prior = _build(
        PRIORS.get(config.prior.name), dict(vars(config.prior), latent_dim=d2, data_dim=data_dim)
    )
    model = HierarchicalVAE(top_prior, between, decoder, likelihood, (d1, d2))
    return model, HierarchicalGaussianGuide(encoder, upper)


def init_decoder_bias(
    model: VAE | HierarchicalVAE, config: RunConfig, pixel_mean: torch.Tensor
) -> None:
    """Start the decoder's output bias at logit(mean pixel) (Burda et al., 2016).

    With the Bernoulli likelihood the decoder's outputs are logits, so at the start every
    image is predicted as the training set's mean image whatever z is, and the first steps
    are not spent learning it.  ``pixel_mean`` (D,) is the mean of the training images.
    """
    last = model.decoder[-1] if isinstance(model.decoder, nn.Sequential) else None
    if config.likelihood.name != "bernoulli" or not isinstance(last, nn.Linear) \
            or last.out_features != pixel_mean.shape[-1]:
        raise UserError("model.decoder_bias = 'data_mean' needs the bernoulli likelihood and a "
                        "decoder whose last layer is linear with one output per pixel (mlp)")
    with torch.no_grad():
        last.bias.copy_(torch.logit(pixel_mean.clamp(1e-3, 1 - 1e-3)))
