"""Generative models, each a Pyro model written as an ``nn.Module``."""

from .vae import VAE, build_vae

__all__ = ["VAE", "build_vae"]
