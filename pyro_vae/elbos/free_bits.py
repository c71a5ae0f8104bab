"""Free bits (Kingma et al., 2016): the KL term of each latent site floored at a few nats.

Each latent site's batch-mean KL(q(z|x) || p(z)) is replaced by max(free_bits, KL) nats per
example, so the encoder may use that many nats of information without being penalised.
"""

from __future__ import annotations

import pyro
import torch
from pyro.distributions.kl import kl_divergence
from pyro.infer.util import check_fully_reparametrized

from .base import EstimatorELBO

__all__ = ["FreeBitsELBO"]


class FreeBitsELBO(EstimatorELBO, pyro.infer.Trace_ELBO):
    """-ELBO whose KL term per latent site is max(free_bits, batch-mean KL) nats per example.

    The KL of each example is the closed form when ``analytic`` and registered, else
    log q(z|x) - log p(z) at the guide's sample (reparameterized guides only).  Below
    the floor the KL gets no gradient, so the encoder is free to use those nats.
    ``loss`` and ``loss_and_grads`` are this estimator too (:mod:`.base`).
    """

    def __init__(self, free_bits: float, analytic: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.free_bits = free_bits
        self.analytic = analytic

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        loss = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            loss = loss + self._free_bits_loss(model_trace, guide_trace) / self.num_particles
        return loss

    def _free_bits_loss(self, model_trace, guide_trace) -> torch.Tensor:
        loss = 0.0
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample":
                continue
            if site["is_observed"]:
                loss = loss - site["log_prob_sum"]
                continue
            guide_site = guide_trace.nodes[name]
            check_fully_reparametrized(guide_site)
            kl = None
            if self.analytic:
                try:
                    kl = kl_divergence(guide_site["fn"], site["fn"])
                except NotImplementedError:
                    pass
            if kl is None:
                kl = guide_site["unscaled_log_prob"] - site["unscaled_log_prob"]
            # kl: (B,) or (particles, B), the data plate last; the site scale carries n / B and beta
            floored = kl.mean(-1).clamp(min=self.free_bits) * kl.shape[-1]
            loss = loss + (guide_site["scale"] * floored).sum()
        return loss
