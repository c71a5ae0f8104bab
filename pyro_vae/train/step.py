"""One SVI step that never reads the device: loss, gradients, and an update unless non-finite.

The flag "this step is bad" is computed on the device and handed to the optimizer, so a
GPU's queue keeps running ahead; :mod:`.guards` reads the flags in batches.
"""

from __future__ import annotations

import torch

__all__ = ["bad_step", "step_unless", "svi_step"]


def bad_step(loss: torch.Tensor, grads: list[torch.Tensor]) -> torch.Tensor:
    """1.0 when the loss or any gradient is NaN/inf, else 0.0: a float tensor on the loss's
    device, computed without reading it (one foreach kernel for the gradients' norm; the
    norm is NaN/inf when any gradient element is)."""
    norm = torch.nn.utils.get_total_norm(grads, foreach=True) if grads else loss.new_zeros(())
    return torch.isfinite(loss.detach() + norm.to(loss.dtype)).logical_not().float()


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

    Returns the pair ``[loss, bad]`` (shape (2,) float, on the loss's device, not read): what the
    guard's next check reads for this step.
    """
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    bad = bad_step(loss, [p.grad for p in params if p.grad is not None])
    step_unless(optimizer, bad)
    return torch.stack([loss.detach().to(bad.dtype), bad])
