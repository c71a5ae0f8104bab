"""pyro-vae: latent-variable generative models in Pyro, trained and compared honestly."""

from .config import RunConfig, load_config
from .data import Dataset, load_dataset
from .errors import UserError
from .evaluate import importance_estimate, log_importance_weights
from .experiment import restore_vae, train_vae
from .guides import GUIDES
from .infer import ELBOS, FitResult, fit
from .likelihoods import LIKELIHOODS
from .models import VAE, build_vae
from .priors import PRIORS
from .registry import Registry

__all__ = [
    "ELBOS",
    "GUIDES",
    "LIKELIHOODS",
    "PRIORS",
    "VAE",
    "Dataset",
    "FitResult",
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
