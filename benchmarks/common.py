"""Shared set-up for the VAE benchmarks: one data set, one Pyro pair, one plain pair, timing."""

from __future__ import annotations

import copy
import random
import statistics

import pyro

from pyro_vae.build import build_vae
from pyro_vae.config import load_config
from pyro_vae.data import binarize, load_dataset
from pyro_vae.elbos import importance_estimate


def setup(overrides=(), device="cpu", seed=0):
    """(config, x_train, x_test, batch_transform, model, guide, plain_encoder, plain_decoder).

    The plain networks start as exact copies of the Pyro ones, so both runs begin
    from the same weights.
    """
    config = load_config(None, [f"train.seed={seed}", f'train.device="{device}"', *overrides])
    data = load_dataset(config.data.dataset, device=device)
    x_train, x_test, transform = binarize(data.x_train, data.x_test, config.data.binarize)
    pyro.set_rng_seed(seed)
    model, guide = build_vae(config, data.dim, binary_data=config.data.binarize != "none")
    model.to(device)
    guide.to(device)
    return (
        config,
        x_train,
        x_test,
        transform,
        model,
        guide,
        copy.deepcopy(guide.encoder),
        copy.deepcopy(model.decoder),
    )


def take_turns(rounds: int, routes: dict, shuffle_seed: int | None = None) -> dict[str, list]:
    """What each route returned in each of ``rounds`` turns, the routes taking turns epoch by
    epoch.

    ``routes`` maps a name to a callable that runs one epoch and returns what it measured (its
    seconds, a profile).  Taking turns makes the noise of a shared machine hit every route
    alike; the ratio of two routes within one turn is free of the machine's drift from turn to
    turn.  With ``shuffle_seed`` each turn runs the routes in a fresh random order, so no route
    always follows the same one (a route can leave the CPU slower for the next: its clock after
    AVX-512 or AMX work, its caches, a runtime's threads still spinning).
    """
    measured = {name: [] for name in routes}
    order = random.Random(shuffle_seed) if shuffle_seed is not None else None
    for _ in range(rounds):
        names = list(routes)
        if order is not None:
            order.shuffle(names)
        for name in names:
            measured[name].append(routes[name]())
    return measured


def median_seconds(rounds: int, routes: dict) -> dict[str, float]:
    """Median seconds per epoch of each route over :func:`take_turns`' turns (each route's
    callable returns an epoch's seconds)."""
    return {name: statistics.median(values)
            for name, values in take_turns(rounds, routes).items()}


def test_elbo(model, guide, x_test, particles: int = 100, seed: int = 0) -> float:
    """Mean test ELBO in nats per example, each example's averaged over ``particles`` draws."""
    pyro.set_rng_seed(seed)
    return importance_estimate(model, guide, x_test, particles).elbo.mean().item()


def plain_test_elbo(model, guide, encoder, decoder, x_test, particles: int = 100, seed: int = 0):
    """:func:`test_elbo` of the plain networks, evaluated through the same Pyro model and guide."""
    model, guide = copy.deepcopy(model), copy.deepcopy(guide)
    guide.encoder, model.decoder = encoder, decoder
    return test_elbo(model, guide, x_test, particles, seed)


def write_markdown(path, script: str, quick: bool, intro: str, table: str) -> None:
    """The table a benchmark measured, as the README's generated blocks read it: a first line
    naming the script (and ``--quick``, whose numbers are not the README's), ``intro``, the
    table."""
    with open(path, "w") as f:
        f.write(f"<!-- written by benchmarks/{script}{' --quick' if quick else ''} -->\n"
                f"{intro}\n\n{table}\n")
