"""ELBOs and bounds, each in a file named after its estimator, chosen by name from :data:`ELBOS`."""

from .base import EnumELBO, EstimatorELBO, MeanFieldELBO, TraceELBO, plate_nesting
from .free_bits import FreeBitsELBO
from .fused import FusedELBO
from .importance import ImportanceEstimate, importance_estimate, log_importance_weights
from .kl_weight import ScaleLatents
from .registry import ELBOS, FUSED, make_elbo, resolve_elbo
from .renyi import IWAEBound, RenyiBound
from .score import ScoreFunction, ScoreFunctionELBO, ScoreFunctionMessenger
from .trace_graph import GraphELBO

__all__ = [
    "ELBOS",
    "FUSED",
    "EnumELBO",
    "EstimatorELBO",
    "FreeBitsELBO",
    "FusedELBO",
    "GraphELBO",
    "IWAEBound",
    "ImportanceEstimate",
    "MeanFieldELBO",
    "RenyiBound",
    "ScaleLatents",
    "ScoreFunction",
    "ScoreFunctionELBO",
    "ScoreFunctionMessenger",
    "TraceELBO",
    "importance_estimate",
    "log_importance_weights",
    "make_elbo",
    "plate_nesting",
    "resolve_elbo",
]
