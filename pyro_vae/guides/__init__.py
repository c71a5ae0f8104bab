"""Variational families q(z | x), chosen by name from :data:`GUIDES`."""

from ..registry import Registry

GUIDES = Registry("guide")

from .gaussian import AmortizedGaussianGuide  # noqa: E402  (registers itself in GUIDES)

__all__ = ["GUIDES", "AmortizedGaussianGuide"]
