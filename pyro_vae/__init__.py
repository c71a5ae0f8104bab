"""pyro-vae: latent-variable generative models in Pyro, trained and compared honestly."""

from .build import build_vae
from .config import RunConfig, load_config
from .data import Dataset, load_dataset
from .elbos import ELBOS, importance_estimate, log_importance_weights
from .errors import UserError
from .experiments.vae import restore_vae, train_vae
from .guides import GUIDES
from .likelihoods import LIKELIHOODS
from .models import VAE, HierarchicalVAE
from .priors import PRIORS
from .registry import Registry
from .train import FitResult, fit

__all__ = [
    "ELBOS",
    "GUIDES",
    "LIKELIHOODS",
    "PRIORS",
    "VAE",
    "Dataset",
    "FitResult",
    "HierarchicalVAE",
    "Registry",
    "RunConfig",
    "UserError",
    "build_vae",
    "fit",
    "importance_estimate",
    "load_config",
    "load_dataset",
    "log_importance_weights",
    "restore_vae",
    "train_vae",
]

__version__ = "0.1.0"
