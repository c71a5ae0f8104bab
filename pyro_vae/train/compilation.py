"""Whether ``fit`` compiles its training step, and the compiled step.

``compile = "on"`` computes each full mini-batch's loss, gradient and NaN-guard flag as one
``torch.compile`` graph (inductor): with theta the trainable parameters, x (B, D) the batch
and s the sites' scales (:class:`~pyro_vae.elbos.fused.FusedPlan`),

    (L, g) = (-ELBO(theta; x, s), grad_theta -ELBO(theta; x, s))    torch.func.grad_and_value
    bad    = 1 unless L + ||g||_2 is finite                         the guard of .step

then steps the optimizer, fused Adam skipping a bad step inside its kernel.  Taking the
gradient with ``torch.func`` inside the graph replaces the autograd engine's walk over the
backward and a few hundred eager operator calls by one call of generated kernels; Adam stays
the fused kernel, which beat inductor's own Adam in the same graph (benchmarks/NOTES.md).  An
epoch's ragged last batch takes the eager step (no dynamic shapes).  Compiling costs seconds
to a minute once per process (less when inductor's disk cache already holds the graph), so
``"auto"`` compiles only runs long enough to pay:

    on   if the loss is fused and the run has at least COMPILE_PAYS_AFTER steps
    off  otherwise

The choice and its reason are printed before the first epoch, with the compile's seconds.
"""

from __future__ import annotations

import time
from functools import cache

import pyro
import torch
from torch import nn

from ..elbos import FusedELBO
from ..elbos.fused import FusedPlan, negative_elbo
from ..rng import forked_rng
from .step import nonfinite, step_unless

__all__ = ["COMPILE_PAYS_AFTER", "COMPILE_SETTINGS", "CompiledStep", "resolve_compile"]

COMPILE_SETTINGS = ("auto", "on", "off")
# steps after which a compiled step has surely repaid its compile on a small CPU: a first
# compile (inductor's disk cache empty) takes about 40 s, and a batch-128 step of a full-MNIST
# epoch saves 0.64 to 2.9 ms (benchmarks/NOTES.md): at the smallest it pays after ~62,000 steps
COMPILE_PAYS_AFTER = 70_000


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


class _Objective(nn.Module):
    """The fused -ELBO as one module, so ``torch.func.functional_call`` can substitute the
    parameters of the VAE and the guide together."""

    def __init__(self, plan: FusedPlan, num_particles: int):
        super().__init__()
        self.vae, self.guide = plan.vae, plan.guide
        self.num_particles, self.analytic_kl = num_particles, plan.analytic_kl

    def forward(self, x: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        return negative_elbo(self.vae, self.guide, x, scales, self.num_particles,
                             self.analytic_kl)


def _loss_and_grads(objective: _Objective, params: dict[str, torch.Tensor], x: torch.Tensor,
                    scales: torch.Tensor, dtype: torch.dtype | None):
    """(the gradients of -ELBO in ``params``' order, ``[loss, bad, ||g||_2]``) for the batch
    x (B, D): the loss and its gradient by ``torch.func.grad_and_value``, then the gradient's
    norm and the NaN guard's flag (:func:`.step.nonfinite`).  ``dtype``: the loss's autocast
    dtype, None for float32."""

    def loss_of(theta):
        with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
            return torch.func.functional_call(objective, theta, (x, scales))

    grads, loss = torch.func.grad_and_value(loss_of)(params)
    grads = list(grads.values())
    # a sum of squares, which inductor fuses into the kernels writing the gradients, where
    # svi_step's foreach norms are eager calls out of the graph
    norm = torch.stack([g.square().sum() for g in grads]).sum().sqrt()
    return grads, torch.stack([loss, nonfinite(loss, norm), norm])


@cache
def _compiled_loss_and_grads():
    """:func:`_loss_and_grads` under ``torch.compile``, one wrapper for the process: Dynamo
    keeps its graphs per code object, guarded by the networks' structure, the batch's shape,
    K, the KL's form and the dtype (the parameters are graph inputs, so a new model of the
    same structure reuses a graph).  ``fallback_random`` makes inductor draw z's noise with
    eager PyTorch's generator instead of its own, so seeds mean the same with and without
    compiling."""
    return torch.compile(_loss_and_grads, options={"fallback_random": True})


class CompiledStep:
    """The compiled training step for ``plan``'s pair, stepping ``optimizer`` over the
    parameters it holds.

    ``step(x, n)`` trains on the batch x (B, D) of a data set of n rows with the scales the
    plan reads from the live handlers and returns ``[loss, bad, ||g||_2]``, like
    :func:`.step.svi_step`.
    """

    def __init__(self, plan: FusedPlan, num_particles: int, optimizer: torch.optim.Optimizer,
                 dtype: torch.dtype | None):
        self.plan, self.optimizer, self.dtype = plan, optimizer, dtype
        self.objective = _Objective(plan, num_particles)
        trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
        self.params = {name: p for name, p in self.objective.named_parameters()
                       if id(p) in trained}
        # the gradient is the graph's output, not autograd's: the graph's inputs are p's values
        # (same storage, updated in place by the optimizer) without autograd's history
        self._values = {name: p.detach() for name, p in self.params.items()}
        self._scales: tuple = (None, None)  # the sites' scales and the tensor holding them

    def __call__(self, x: torch.Tensor, n: int) -> torch.Tensor:
        grads, row = self._loss_and_grads(x, n)
        for p, grad in zip(self.params.values(), grads, strict=True):
            p.grad = grad
        step_unless(self.optimizer, row[1])
        return row

    def compile(self, x: torch.Tensor, n: int) -> float:
        """Compile for batches of x's shape now, on forked generators (the run's draws are
        unchanged; nothing is updated); its seconds."""
        start = time.perf_counter()
        with forked_rng(x):
            self._loss_and_grads(x, n)
        return time.perf_counter() - start

    def _loss_and_grads(self, x: torch.Tensor, n: int):
        scales = self.plan.scales(x.shape[0], n)
        if self._scales[0] != scales:  # new values only during KL warm-up: a copy to the device
            self._scales = (scales, torch.tensor(scales, device=x.device))
        scales = self._scales[1]
        # without distribution validation, as the fused loss (FusedPlan.loss says why)
        with pyro.validation_enabled(False):
            return _compiled_loss_and_grads()(self.objective, self._values, x, scales,
                                              self.dtype)
