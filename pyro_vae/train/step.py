"""One SVI step that never reads the device: loss, gradients, and an update unless non-finite.

The flag "this step is bad" and the gradient's norm are computed on the device and handed to
the optimizer, so a GPU's queue keeps running ahead; :mod:`.guards` reads them in batches.
"""

from __future__ import annotations

import torch

__all__ = ["bad_step", "nonfinite", "step_unless", "svi_step"]


def _total_norm(loss: torch.Tensor, grads: list[torch.Tensor]) -> torch.Tensor:
    """||g||_2 over all gradients, a 0-dim tensor on the loss's device: one foreach kernel for
    the per-tensor norms, then the norm of those; NaN/inf when any gradient element is.

    ``torch.nn.utils.get_total_norm`` computes the same after grouping the tensors by device
    and dtype on every call; the gradients of one run share both, and on the CPU the grouping
    is a noticeable part of the guard, which is most of what ``fit`` adds to a bare step.
    """
    if not grads:
        return loss.new_zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def nonfinite(loss: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """1.0 when the loss or the gradient's norm is NaN/inf, else 0.0 (float, not read)."""
    return torch.isfinite(loss.detach() + norm).logical_not().float()


def bad_step(loss: torch.Tensor, grads: list[torch.Tensor]) -> torch.Tensor:
    """1.0 when the loss or any gradient is NaN/inf, else 0.0: a float tensor on the loss's
    device, computed without reading it (the gradients' norm is NaN/inf when any element is)."""
    return nonfinite(loss, _total_norm(loss, grads))


def step_unless(optimizer: torch.optim.Optimizer, bad: torch.Tensor) -> None:
    """``optimizer.step()`` unless ``bad`` (a 0-dim float tensor) is 1, decided on the device.

    Fused Adam reads ``found_inf`` (the attribute ``torch.amp.GradScaler`` sets) inside its
    kernel and leaves the parameters, moments and step count as they were; other optimizers
    need the flag on the host.
    """
    if optimizer.defaults.get("fused"):
        optimizer.found_inf = bad
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf
    elif not bad.item():
        optimizer.step()


def svi_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, params) -> torch.Tensor:
    """Back-propagate ``loss`` and step ``optimizer`` over ``params`` unless the step is bad.

    Returns ``[loss, bad, ||g||_2]`` (shape (3,) float, on the loss's device, not read): what the
    guard's next check reads for this step.  The gradient's norm is the one the NaN test
    computes anyway, so reporting it costs no kernel and no synchronisation.
    """
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norm = _total_norm(loss, [p.grad for p in params if p.grad is not None])
    bad = nonfinite(loss, norm)
    step_unless(optimizer, bad)
    return torch.stack([loss.detach(), bad, norm])
