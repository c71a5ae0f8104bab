"""Training by SVI: :func:`fit`, its step, its guards, its checkpoints, its TensorBoard log and
its thread count."""

from .compilation import COMPILE_SETTINGS, resolve_compile
from .fit import fit
from .guards import CHECK_EVERY, TrainingDiverged, TrainingInterrupted
from .precision import PRECISION_SETTINGS, PRECISIONS, native_bfloat16, resolve_precision
from .state import FitResult
from .tensorboard import TrainingLog
from .threads import check_threads, resolve_threads, running_threads, using_threads

__all__ = [
    "CHECK_EVERY",
    "COMPILE_SETTINGS",
    "PRECISIONS",
    "PRECISION_SETTINGS",
    "FitResult",
    "TrainingDiverged",
    "TrainingInterrupted",
    "TrainingLog",
    "check_threads",
    "fit",
    "native_bfloat16",
    "resolve_compile",
    "resolve_precision",
    "resolve_threads",
    "running_threads",
    "using_threads",
]
