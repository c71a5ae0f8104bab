"""Whether ``fit`` compiles its training loss, and the one-time compile before the first epoch.

``compile = "on"`` computes the fused VAE loss (forward and backward) with ``torch.compile``
(:func:`~pyro_vae.elbos.fused.compiled_negative_elbo`); the optimizer step, the NaN guard
and the ragged last batch of each epoch stay eager.  Compiling costs seconds to a minute
once per process (less when inductor's disk cache already holds the graphs) and saves a
millisecond or two per batch-128 step, so ``"auto"`` compiles only runs long enough to pay:

    on   if the loss is fused and the run has at least COMPILE_PAYS_AFTER steps
    off  otherwise

The choice and its reason are printed before the first epoch, with the compile's seconds.
"""

from __future__ import annotations

import time

import torch

from ..elbos import FusedELBO
from ..rng import forked_rng

__all__ = ["COMPILE_PAYS_AFTER", "COMPILE_SETTINGS", "compile_loss", "resolve_compile"]

COMPILE_SETTINGS = ("auto", "on", "off")
# steps after which a compiled loss has surely repaid its compile on a small CPU: a first
# compile (inductor's disk cache empty) takes up to a minute, and a batch-128 step saves about
# a millisecond or two (benchmarks/vs_numpyro.py; the README's "Compiling the loss")
COMPILE_PAYS_AFTER = 60_000


def resolve_compile(setting: str, steps: int, loss_fn, model, guide, batch: torch.Tensor,
                    n: int) -> tuple[bool, str]:
    """(whether to compile, why) for a setting in :data:`COMPILE_SETTINGS`, a run of ``steps``
    steps and ``loss_fn`` on ``(model, guide)`` with mini-batches like ``batch`` of n rows.

    Raises
    ------
    ValueError
        For a setting that is not one of :data:`COMPILE_SETTINGS`.
    """
    if setting not in COMPILE_SETTINGS:
        raise ValueError(f"compile must be one of {list(COMPILE_SETTINGS)}, not {setting!r}")
    if setting == "off":
        return False, "set"
    if not isinstance(loss_fn, FusedELBO):
        return False, f"{setting}: only the fused VAE loss compiles, not {type(loss_fn).__name__}"
    declined = loss_fn.decline_reason(model, guide, batch, n=n)
    if declined is not None:
        return False, f"{setting}: the loss is not fused ({declined})"
    if setting == "on":
        return True, "set"
    if steps < COMPILE_PAYS_AFTER:
        return False, f"auto: {steps} steps, under the {COMPILE_PAYS_AFTER} a compile pays after"
    return True, f"auto: {steps} steps, at least the {COMPILE_PAYS_AFTER} a compile pays after"


def compile_loss(loss_fn: FusedELBO, model, guide, params: list[torch.Tensor],
                 batch: torch.Tensor, n: int, autocast) -> float:
    """Compile ``loss_fn`` for batches of ``batch``'s shape now; its seconds.

    One forward and backward of ``batch`` (B, D) under ``autocast`` (the training loss's),
    on forked generators and with ``params``' gradients put back afterwards, so the run's draws and
    parameters are those of an uncompiled run; the loop then never stops to compile.
    """
    grads = [p.grad for p in params]
    loss_fn.compile(batch.shape[0])
    start = time.perf_counter()
    with forked_rng(batch), autocast:
        loss = loss_fn.differentiable_loss(model, guide, batch, n=n)
    loss.backward()
    for p, grad in zip(params, grads, strict=True):
        p.grad = grad
    return time.perf_counter() - start
