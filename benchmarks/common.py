"""Shared set-up for the VAE benchmarks: one data set, one Pyro pair, one plain pair."""

from __future__ import annotations

import copy

import pyro

from pyro_vae.config import load_config
from pyro_vae.data import binarize, load_dataset
from pyro_vae.models import build_vae


def setup(overrides=(), device="cpu", seed=0):
    """(config, x_train, x_test, batch_transform, model, guide, plain_encoder, plain_decoder).

    The plain networks start as exact copies of the Pyro ones, so both runs begin
    from the same weights.
    """
    config = load_config(None, [f"train.seed={seed}", f'train.device="{device}"', *overrides])
    data = load_dataset(config.data.dataset, device=device)
    x_train, x_test, transform = binarize(data.x_train, data.x_test, config.data.binarize)
    pyro.set_rng_seed(seed)
    model, guide = build_vae(config, data.dim)
    model.to(device)
    guide.to(device)
    return (config, x_train, x_test, transform, model, guide,
            copy.deepcopy(guide.encoder), copy.deepcopy(model.decoder))
