"""ELBOs and bounds, each in a file named after its estimator, chosen by name from :data:`ELBOS`."""

from .free_bits import FreeBitsELBO
from .fused import FusedELBO
from .importance import ImportanceEstimate, importance_estimate, log_importance_weights
from .kl_weight import ScaleLatents
from .registry import ELBOS, FUSED, make_elbo, resolve_elbo
from .renyi import IWAEBound, RenyiBound, pointwise_log_weights
from .score import ScoreFunctionELBO, ScoreFunctionMessenger
from .trace_graph import GraphELBO

__all__ = [
    "ELBOS",
    "FUSED",
    "FreeBitsELBO",
    "FusedELBO",
    "GraphELBO",
    "IWAEBound",
    "ImportanceEstimate",
    "RenyiBound",
    "ScaleLatents",
    "ScoreFunctionELBO",
    "ScoreFunctionMessenger",
    "importance_estimate",
    "log_importance_weights",
    "make_elbo",
    "pointwise_log_weights",
    "resolve_elbo",
]
