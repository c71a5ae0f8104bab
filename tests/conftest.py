"""Shared fixtures: a clean param store, validation on, fixed seeds, a headless backend,
one intra-op thread where asked for, and the tiny VAE most tests train."""

import matplotlib

matplotlib.use("Agg")

import pyro  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from pyro_vae.build import build_vae  # noqa: E402
from pyro_vae.config import load_config  # noqa: E402
from pyro_vae.rng import single_thread  # noqa: E402


@pytest.fixture(autouse=True)
def clean_pyro():
    """Every test starts with an empty param store, validation on and seed 0."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    pyro.enable_validation(True)
    torch.set_default_dtype(torch.float32)
    yield
    pyro.clear_param_store()


@pytest.fixture
def one_thread():
    """One intra-op thread: tiny tensors on the shared 2-core machine gain nothing from two."""
    with single_thread():
        yield


def tiny_vae(data_dim: int, *overrides: str, latent_dim: int = 3, hidden: int = 8):
    """(model, guide) of the default config at toy size; ``overrides`` as ``--set`` takes them."""
    config = load_config(
        None, [f"model.latent_dim={latent_dim}", f"model.hidden=[{hidden}]", *overrides]
    )
    return build_vae(config, data_dim)


@pytest.fixture(scope="session")
def mnist5k():
    from pyro_vae.data import load_dataset

    return load_dataset("mnist5k")
