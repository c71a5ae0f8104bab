"""Training by SVI: :func:`fit`, its step, its guards, its checkpoints and its TensorBoard log."""

from .fit import PRECISIONS, fit
from .guards import CHECK_EVERY, TrainingDiverged, TrainingInterrupted
from .state import FitResult
from .tensorboard import TrainingLog

__all__ = [
    "CHECK_EVERY",
    "PRECISIONS",
    "FitResult",
    "TrainingDiverged",
    "TrainingInterrupted",
    "TrainingLog",
    "fit",
]
