"""Shared fixtures: a clean param store, validation on, fixed seeds, a headless backend."""

import matplotlib

matplotlib.use("Agg")

import pyro  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def clean_pyro():
    """Every test starts with an empty param store, validation on and seed 0."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    pyro.enable_validation(True)
    torch.set_default_dtype(torch.float32)
    yield
    pyro.clear_param_store()


@pytest.fixture(scope="session")
def mnist5k():
    from pyro_vae.data import load_dataset

    return load_dataset("mnist5k")
