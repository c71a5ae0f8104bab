"""The guards around the training loop: non-finite steps, divergence, Ctrl-C.

A step whose loss or gradient is not finite is skipped on the device (:mod:`.step`); every
:data:`CHECK_EVERY` steps :func:`tally` reads the pending steps' losses and flags in one host
synchronisation, and a run of bad steps sends the run back to the last epoch boundary with
the learning rate halved (:func:`roll_back`), at most a few times before
:class:`TrainingDiverged`.  Ctrl-C is deferred to the end of the current step.
"""

from __future__ import annotations

import copy
import math
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import UserError
from .state import FitResult, Progress, set_lr

__all__ = [
    "CHECK_EVERY",
    "Check",
    "TrainingDiverged",
    "TrainingInterrupted",
    "all_finite",
    "deferred_interrupt",
    "roll_back",
    "tally",
]

# steps between the checks that read the losses (and NaN flags) to the host: one
# synchronisation per check instead of one per step, which would stall a GPU's queue
CHECK_EVERY = 20


class TrainingInterrupted(Exception):
    """Ctrl-C during ``fit``: the current step finished and a checkpoint was written."""

    def __init__(self, checkpoint: Path | None):
        where = f"checkpoint saved to {checkpoint}" if checkpoint else "no checkpoint was asked for"
        super().__init__(f"interrupted; {where}")
        self.checkpoint = checkpoint


class TrainingDiverged(UserError):
    """The loss or gradients stayed non-finite even after rolling back with smaller steps."""


@contextmanager
def deferred_interrupt(enabled: bool):
    """While active, Ctrl-C only sets ``flag["set"]``; the loop checks it after each step."""
    flag = {"set": False}
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        flag["set"] = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def all_finite(tensors) -> bool:
    """One host synchronisation: a sum is NaN/inf when any of its terms is."""
    return bool(torch.isfinite(torch.stack([t.detach().sum() for t in tensors])).all())


@dataclass
class Check:
    """What one check read from the device about the steps since the last one.

    ``elbo`` is the mean per-example ELBO (nats) of the good steps' batches, weighted by
    batch size, and ``grad_norm`` the mean over those steps of ||g||_2, the norm of the
    gradient of the step's loss (~ N x mean -ELBO) in all parameters; both NaN when every
    step was bad.  ``examples`` counts the rows of every step, good or bad (the work done).
    """

    bad_run: int
    elbo: float
    grad_norm: float
    examples: int


def tally(
    pending: list[tuple[torch.Tensor, int]], state: Progress, result: FitResult, n: int,
    bad_run: int, max_bad_steps: int,
) -> Check:
    """Add the pending steps' losses to the epoch's total and empty ``pending``, in one host
    synchronisation for them all.

    ``pending`` holds each step's ``[loss, bad, grad norm]`` (:func:`.step.svi_step`) and batch
    size.  The :class:`Check` returned carries the run of bad steps in a row after them
    (``bad_run`` before them), or ``max_bad_steps`` as soon as a run reaches it.
    """
    values = torch.stack([row for row, _ in pending]).tolist()
    sizes = [size for _, size in pending]
    pending.clear()
    total = seen = norms = good = 0
    for (loss, bad, norm), size in zip(values, sizes, strict=True):
        if bad:
            result.skipped_steps += 1
            bad_run += 1
            if bad_run >= max_bad_steps:
                break
            continue
        bad_run = 0
        # loss ~ n * mean per-example -ELBO; weight by this batch's share of the epoch
        state.total += loss * (size / n)
        state.seen += size
        total += loss * (size / n)
        seen += size
        norms += norm
        good += 1
    return Check(bad_run, -total / seen if seen else math.nan, norms / good if good else math.nan,
                 sum(sizes))


def roll_back(
    last_good, model, guide, optimizer, result: FitResult, max_rollbacks: int
) -> Progress:
    """Return to the last epoch boundary's state with the learning rate halved; that position.

    Gives up with :class:`TrainingDiverged` after ``max_rollbacks``.
    """
    result.rollbacks += 1
    if result.rollbacks > max_rollbacks:
        raise TrainingDiverged(
            f"the loss or its gradient stayed NaN/inf after {max_rollbacks} rollbacks with the "
            "learning rate halved each time; lower --lr, or check that the likelihood suits the "
            "data (grey levels need --binarize or a gaussian/beta likelihood)"
        )
    model_state, guide_state, optimizer_state, state = copy.deepcopy(last_good)
    model.load_state_dict(model_state)
    guide.load_state_dict(guide_state)
    optimizer.load_state_dict(optimizer_state)
    state.lr /= 2
    set_lr(optimizer, state.lr)
    return state
