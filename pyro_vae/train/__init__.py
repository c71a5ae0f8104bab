"""Training by SVI: :func:`fit`, its step, its guards and its checkpoints."""

from .fit import PRECISIONS, fit
from .guards import CHECK_EVERY, TrainingDiverged, TrainingInterrupted
from .state import FitResult

__all__ = [
    "CHECK_EVERY",
    "PRECISIONS",
    "FitResult",
    "TrainingDiverged",
    "TrainingInterrupted",
    "fit",
]
