"""What ``fit`` carries from step to step: its position, its measurements, its generators.

A :class:`Progress` with the optimizer's and the generators' states is everything needed to
continue a run exactly where it stopped; checkpoints save it, rollbacks return to a copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError

__all__ = ["FitResult", "Progress", "rng_state", "set_rng_state", "set_lr"]


@dataclass
class FitResult:
    """What ``fit`` measured; ELBOs are nats per example (higher is better)."""

    elbo: str = ""  # the ELBO used ("auto" resolved)
    train_elbo: list[float] = field(default_factory=list)
    test_elbo: list[float] = field(default_factory=list)
    seconds_per_epoch: list[float] = field(default_factory=list)
    examples_per_second: float = float("nan")
    checkpoint: Path | None = None
    skipped_steps: int = 0  # steps dropped for a non-finite loss or gradient
    rollbacks: int = 0  # returns to the last good state with the learning rate halved
    precision: str = "float32"  # the training loss's arithmetic ("auto" resolved)
    precision_reason: str = "set"
    compiled: bool = False  # the fused loss ran under torch.compile ("auto" resolved)
    compile_reason: str = "set"
    compile_seconds: float = 0.0  # the one-time compile before the first epoch


@dataclass
class Progress:
    """Everything needed to continue training exactly where it stopped (saved in checkpoints)."""

    epoch: int = 0  # completed epochs
    step: int = 0  # steps done in the current epoch
    order: torch.Tensor | None = None  # the current epoch's shuffle of the training rows
    total: float = 0.0  # sum over the epoch's examples so far of -ELBO (nats)
    seen: int = 0
    global_step: int = 0
    lr: float = 1e-3
    examples: int = 0
    train_seconds: float = 0.0

    def state(self) -> dict[str, Any]:
        return dict(vars(self))

    def check(self, n: int, batch_size: int) -> None:
        """A :class:`UserError` unless this position fits a training set of ``n`` rows: a
        saved (or tampered) position must never index outside the data."""
        steps = -(-n // batch_size)
        problem = None
        if not (self.epoch >= 0 and 0 <= self.step <= steps and self.seen >= 0):
            problem = f"epoch {self.epoch}, step {self.step} of {steps}"
        elif self.order is not None and not _is_permutation(self.order, n):
            problem = f"its shuffle is not an order of the {n} training rows"
        if problem:
            raise UserError(f"cannot resume from this checkpoint: {problem}")


def _is_permutation(order: torch.Tensor, n: int) -> bool:
    """Whether ``order`` holds each of 0..n-1 exactly once."""
    return (order.shape == (n,) and not order.is_floating_point()
            and torch.equal(order.sort().values, torch.arange(n, device=order.device)))


def rng_state() -> dict[str, Any]:
    # training draws only from torch's generators (shuffles, binarization, z samples)
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {"cpu": torch.get_rng_state(), "cuda": cuda}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
