"""Generative models, each a Pyro model written as an ``nn.Module``."""

from .gmm import GaussianMixtureModel
from .hierarchical import AncestralMarginal, HierarchicalVAE
from .uniform_scale import UniformScale
from .vae import VAE

__all__ = ["VAE", "HierarchicalVAE", "AncestralMarginal", "GaussianMixtureModel", "UniformScale"]
