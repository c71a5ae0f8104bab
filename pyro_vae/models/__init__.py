"""Generative models, each a Pyro model written as an ``nn.Module``."""

from .gmm import GaussianMixtureModel
from .uniform_scale import UniformScale
from .vae import VAE

__all__ = ["VAE", "GaussianMixtureModel", "UniformScale"]
