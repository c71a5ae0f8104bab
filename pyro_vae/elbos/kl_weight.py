"""The KL weight beta: a handler that scales the log-density of every latent site.

Scaling log p(z) in the model and log q(z | x) in the guide by beta scales the KL term
of the ELBO and nothing else: beta < 1 during KL warm-up, any beta for a beta-VAE.
"""

from __future__ import annotations

from pyro.poutine.messenger import Messenger

__all__ = ["ScaleLatents"]


class ScaleLatents(Messenger):
    """Multiply the log-density of every unobserved sample site by ``weight`` (KL weight beta)."""

    def __init__(self, weight: float = 1.0):
        super().__init__()
        self.weight = weight

    def _process_message(self, msg):
        if msg["type"] == "sample" and not msg["is_observed"]:
            msg["scale"] = msg["scale"] * self.weight
