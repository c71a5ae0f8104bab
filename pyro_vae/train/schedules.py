"""Learning-rate schedules by name: epoch -> multiplier of the configured learning rate.

``iwae`` is the schedule of Burda, Grosse & Salakhutdinov (2016): stage i = 0, 1, ..., 7 runs
3^i epochs at 10^(-i/7) times the base rate (3280 epochs in all; later epochs stay at the last
stage's rate).  ``step`` multiplies by ``decay`` every ``step`` epochs, ``exponential`` every
epoch.  The multiplier of epoch e (0-based) depends on e alone, so a resumed run continues
the schedule exactly where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable

from ..registry import Registry

__all__ = ["LR_SCHEDULES", "IWAE_STAGES", "iwae_stage", "make_schedule"]

LR_SCHEDULES = Registry("learning-rate schedule")
IWAE_STAGES = 8  # stages 0..7 of the paper's schedule: 3^0 + ... + 3^7 = 3280 epochs

Schedule = Callable[[int], float]  # epoch (0-based) -> multiplier of the base learning rate


def iwae_stage(epoch: int) -> int:
    """The stage i of the IWAE schedule that epoch (0-based) falls in: the least i with
    3^0 + ... + 3^i > epoch, at most 7."""
    stage, end = 0, 1
    while epoch >= end and stage < IWAE_STAGES - 1:
        stage += 1
        end += 3**stage
    return stage


@LR_SCHEDULES.register("constant")
def constant(decay: float = 0.5, step: int = 10) -> Schedule:
    """The configured rate throughout."""
    return lambda epoch: 1.0


@LR_SCHEDULES.register("iwae")
def iwae(decay: float = 0.5, step: int = 10) -> Schedule:
    """10^(-i/7) in stage i, stage i lasting 3^i epochs (Burda et al., 2016)."""
    return lambda epoch: 10.0 ** (-iwae_stage(epoch) / 7)


@LR_SCHEDULES.register("step")
def step_decay(decay: float = 0.5, step: int = 10) -> Schedule:
    """decay^(epoch // step)."""
    return lambda epoch: decay ** (epoch // step)


@LR_SCHEDULES.register("exponential")
def exponential(decay: float = 0.5, step: int = 10) -> Schedule:
    """decay^epoch."""
    return lambda epoch: decay**epoch


def make_schedule(name: str, decay: float = 0.5, step: int = 10) -> Schedule:
    """The schedule registered as ``name`` with its ``decay`` and ``step``."""
    return LR_SCHEDULES.get(name)(decay=decay, step=step)
