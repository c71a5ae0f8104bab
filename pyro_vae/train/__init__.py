"""Training by SVI: :func:`fit`, its step, its guards, its checkpoints, its TensorBoard log and
its thread count."""

from .fit import PRECISIONS, fit
from .guards import CHECK_EVERY, TrainingDiverged, TrainingInterrupted
from .state import FitResult
from .tensorboard import TrainingLog
from .threads import check_threads, resolve_threads, running_threads, using_threads

__all__ = [
    "CHECK_EVERY",
    "PRECISIONS",
    "FitResult",
    "TrainingDiverged",
    "TrainingInterrupted",
    "TrainingLog",
    "check_threads",
    "fit",
    "resolve_threads",
    "running_threads",
    "using_threads",
]
