"""Variational families q(z | x), chosen by name from :data:`GUIDES`.

A guide is an ``nn.Module`` called as ``guide(x, n=N)`` that samples the site "z"
inside the data plate.  Its class has ``encoder_features(latent_dim)`` (how many
outputs the encoder network needs) and is built with the keyword arguments its
signature names, out of ``encoder``, ``latent_dim`` and the ``[guide]`` config
entries (``flows``, ``flow_hidden``).  Guides with a Gaussian head also have
``encode(x) -> (loc, scale)``, used by the figures and the ``vamp`` prior.
"""

from .base import GUIDES, AmortizedGuide, active_units

# importing a guide module registers it in GUIDES
from .delta import DeltaGuide
from .gaussian import AmortizedGaussianGuide
from .iaf import IAFGuide

__all__ = [
    "GUIDES",
    "AmortizedGuide",
    "active_units",
    "AmortizedGaussianGuide",
    "DeltaGuide",
    "IAFGuide",
]
