"""The estimator ``fit`` minimises, from the ELBO's name and the training options.

``"auto"`` is resolved to ``meanfield`` or ``trace`` for the model and guide at hand
(:func:`~pyro_vae.elbos.resolve_elbo`) and computed by that estimator's fused path; free bits
replace the KL term by its floored version; distributed training wraps the estimator so the
gradients are summed over the processes.
"""

from __future__ import annotations

import pyro
import torch

from ..elbos import FUSED, FreeBitsELBO, make_elbo, plate_nesting, resolve_elbo

__all__ = ["training_objective"]


def training_objective(model, guide, batch: torch.Tensor, n: int, elbo: str, num_particles: int,
                       free_bits: float = 0.0, distributed: bool = False,
                       max_plate_nesting: int | None = None):
    """(loss function, the ELBO's name with "auto" resolved) for ``fit``.

    ``batch`` (B, D) is one mini-batch of the n training rows, on which "auto" is resolved;
    ``max_plate_nesting`` None lets Pyro infer it.
    """
    fused = elbo == "auto"
    if fused:
        elbo = resolve_elbo(model, guide, batch, n=n)
    if free_bits > 0:
        if elbo not in ("trace", "meanfield"):
            raise ValueError(f"free bits work with elbo 'trace' or 'meanfield', not {elbo!r}")
        loss_fn: pyro.infer.ELBO = FreeBitsELBO(
            free_bits,
            analytic=elbo == "meanfield",
            num_particles=num_particles,
            vectorize_particles=num_particles > 1,
            max_plate_nesting=plate_nesting(max_plate_nesting),
        )
    else:
        loss_fn = make_elbo(FUSED[elbo] if fused else elbo, num_particles, max_plate_nesting)
    if distributed:
        from .distributed import DataParallelELBO  # torch.distributed only when asked for

        loss_fn = DataParallelELBO(loss_fn, model, guide)
    return loss_fn, elbo
